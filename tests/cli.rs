//! Command-line contract: every flag has an `IDAAS_PROJECTOR_*` twin, `crd` prints the CRD.

use std::process::Command;

use clap::CommandFactory;
use idaas_projector::cli::Cli;

fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if matches!(id, "help" | "version") || arg.is_positional() {
            continue;
        }
        match arg.get_env() {
            Some(env) if env.to_string_lossy().starts_with("IDAAS_PROJECTOR_") => {}
            _ => missing.push(format!("{path} --{id}")),
        }
    }
    for sub in cmd.get_subcommands() {
        walk(sub, &format!("{path} {}", sub.get_name()), missing);
    }
}

#[test]
fn every_flag_has_an_env_twin() {
    let cmd = Cli::command();
    cmd.clone().debug_assert();
    let mut missing = Vec::new();
    walk(&cmd, "idaas-projector", &mut missing);
    assert!(
        missing.is_empty(),
        "flags without IDAAS_PROJECTOR_ env: {missing:?}"
    );
}

#[test]
fn crd_prints_the_m2mtoken_definition() {
    let out = Command::new(env!("CARGO_BIN_EXE_idaas-projector"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(out.status.success());
    let yaml = String::from_utf8(out.stdout).unwrap();
    for want in [
        "kind: CustomResourceDefinition",
        "name: m2mtokens.idaas-projector.io",
        "- m2mt",
        "scope: Namespaced",
        "x-kubernetes-validations",
        "name: Ready",
        "name: Audience",
        "name: Expires",
        "name: Age",
    ] {
        assert!(yaml.contains(want), "missing {want:?}");
    }
}

#[test]
fn webhook_flags_are_validated_with_exit_two() {
    let out = Command::new(env!("CARGO_BIN_EXE_idaas-projector"))
        .args([
            "webhook",
            "--standalone",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--default-oidc-provider-arn",
            "not-an-arn",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--default-oidc-provider-arn"), "{stderr}");
}

#[test]
fn bad_allowed_issuers_are_bad_usage_with_the_valid_form() {
    for (command, pattern) in [
        ("controller", "http://idaas.example.com"),
        ("serve", "https://*.com"),
        ("controller", "https://x.aliyunidaas.com/path"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_idaas-projector"))
            .args([command, "--allowed-issuers", pattern])
            .env_remove("IDAAS_PROJECTOR_ALLOWED_ISSUERS")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{command} {pattern}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--allowed-issuers"), "{stderr}");
        assert!(stderr.contains("https://HOST[:PORT]"), "{stderr}");
    }
}
