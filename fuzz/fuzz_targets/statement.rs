//! In-toto statements and CEL conditions: the first line is compiled as a
//! condition (as a policy would be loaded), the rest parsed as a statement
//! and, when both are valid, the condition evaluated over it as the gate
//! does. Nothing may panic, and a statement is only read strictly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::digest::{Algorithm, Digest};
use portcullis::gate::statement::{Head, Statement, to_cel};

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (condition, payload) = (&data[..split], data.get(split + 1..).unwrap_or(&[]));
    let program = std::str::from_utf8(condition)
        .ok()
        .filter(|c| c.len() <= 4096)
        .and_then(|c| cel::Program::compile(c).ok());
    if let Ok(head) = Head::parse(payload) {
        let _ = head.sha256_subjects().count();
    }
    let Ok(st) = Statement::parse(payload) else {
        return;
    };
    let _ = st.time();
    let _ = st.names(&Digest::of(Algorithm::Sha256, payload));
    if let Some(program) = program {
        let mut ctx = cel::Context::default();
        ctx.add_variable_from_value("predicate", to_cel(&st.predicate));
        ctx.add_variable_from_value("statement", to_cel(&st.raw));
        let _ = program.execute(&ctx);
    }
});
