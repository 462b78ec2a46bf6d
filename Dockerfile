# portcullis container image: a multi-stage build into a small, non-root
# runtime image (distroless: glibc, CA-free since the web PKI roots are
# compiled in, no shell).
#
#   docker build -t portcullis .
#   docker run -p 5000:5000 -v portcullis-data:/var/lib/portcullis portcullis
#
# The configuration path is the argument: mount your own file and name it,
#   docker run -v ./my.toml:/etc/portcullis/my.toml:ro ... portcullis \
#     serve --config /etc/portcullis/my.toml

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
# The whole source tree (see .dockerignore): Cargo checks every target the
# manifest declares, benches and tests included, even for one binary.
COPY . .
RUN cargo build --release --locked --bin portcullis \
 && mkdir -p /out/var/lib/portcullis

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/portcullis /usr/local/bin/portcullis
COPY config/container.toml /etc/portcullis/portcullis.toml
# The cache directory, owned by the non-root user so a fresh volume is writable.
COPY --from=build --chown=65532:65532 /out/var/lib/portcullis /var/lib/portcullis
USER 65532:65532
VOLUME ["/var/lib/portcullis"]
# 5000: the registry API; 9090: /metrics, /healthz, /readyz.
EXPOSE 5000 9090
# SIGTERM drains in-flight responses for shutdown_grace, then exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["serve", "--config", "/etc/portcullis/portcullis.toml"]
