//! The admin API against its own OpenAPI document (issue 19): Schemathesis, an outside tester
//! from PyPI, reads the document a real hub serves and sends a bounded number of generated
//! requests to every operation, valid and invalid, with and without the token. No answer may
//! be a 5xx, every answer must be one the document lists, with the content type and the body
//! schema it gives, and no request the document rules out may be accepted. The document is made from the handlers (utoipa), so what this checks
//! is that the code and the types it declares agree with what the hub does.
//!
//! `SWITCHBOARD_SCHEMATHESIS_EXAMPLES` sets the cases per operation (default 25); Schemathesis
//! is installed by `deploy/schemathesis` on first use.

mod common;

use std::process::Command;

use common::*;

/// Runs `deploy/schemathesis` and answers the path of the command it installed.
fn schemathesis() -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/schemathesis");
    let out = Command::new(script).output().expect("deploy/schemathesis runs");
    assert!(
        out.status.success(),
        "deploy/schemathesis failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn every_answer_of_the_admin_api_is_one_its_openapi_document_lists_and_none_is_a_5xx() {
    let command = schemathesis();
    let dir = tempfile::tempdir().unwrap();
    // Schemathesis sends many requests without a token and with wrong ones: the back-off after
    // failed authentications and the request rates would answer the rest 429.
    let config = "[admin]\nfailed_auth_limit = 0\nrequests_per_second_per_token = 0\nrequests_per_second_per_address = 0\n";
    let hub = HubProcess::start_configured(dir.path(), config);
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let examples =
        std::env::var("SWITCHBOARD_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "25".into());
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(&command)
        .current_dir(work.path())
        .args(["run", &format!("http://{}/v1/openapi.json", hub.admin)])
        .args(["--header", &format!("Authorization: Bearer {}", token.trim())])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance,response_headers_conformance,\
             negative_data_rejection,missing_required_header,ignored_auth,unsupported_method",
        ])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", &examples, "--seed", "19", "--workers", "1"])
        .args(["--generation-database", "none", "--no-color", "--request-timeout", "10"])
        .output()
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found answers the document does not allow:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It tested every operation of the document.
    let tested = report.lines().find(|l| l.trim_start().starts_with("Tested:")).unwrap_or("");
    let selected = report.lines().find(|l| l.trim_start().starts_with("Selected:")).unwrap_or("");
    let total = selected.rsplit('/').next().unwrap_or("?").trim();
    assert_eq!(tested.trim(), format!("Tested: {total}"), "{report}");
}
