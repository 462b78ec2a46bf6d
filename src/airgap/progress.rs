//! Progress of `export`, `import` and `warm`: bytes and objects, with a
//! bar, on a terminal; nothing when stderr is not one (the commands print a
//! summary at the end either way). The total grows as manifests name more
//! blobs. This module must not decide anything.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress display for one command.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar for `verb` ("exporting", "importing", "warming") on stderr,
    /// hidden unless stderr is a terminal.
    pub fn new(verb: &str) -> Progress {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {msg} ({elapsed})",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        bar.set_prefix(verb.to_owned());
        Progress { bar }
    }

    /// Hidden: for callers that show nothing (the server's admin import).
    pub fn hidden() -> Progress {
        Progress {
            bar: ProgressBar::hidden(),
        }
    }

    /// `bytes` more to move.
    pub fn expect(&self, bytes: u64) {
        self.bar.inc_length(bytes);
    }

    /// One object of `bytes` moved (or found already there).
    pub fn done(&self, bytes: u64, objects: usize) {
        self.bar.inc(bytes);
        self.bar.set_message(format!("{objects} objects"));
    }

    /// The image being worked on.
    pub fn image(&self, image: &str) {
        self.bar.set_prefix(image.to_owned());
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
