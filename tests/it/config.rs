//! Settings layering, end to end through the binary: defaults < config file < `VITRINE_*`
//! environment < flags, as `vitrine config COMMAND --json` reports them, and the errors a wrong
//! file or value gives.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{root, vitrine_bin};

/// The binary with none of the caller's settings variables, run in `dir`.
fn vitrine(dir: &Path) -> Command {
    let mut cmd = Command::new(vitrine_bin());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("VITRINE_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("VITRINE_LOG", "warn").current_dir(dir).stdin(Stdio::null());
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// One JSON object per command printed by `vitrine config ... --json`.
fn reports(out: &Output) -> Vec<Value> {
    assert!(out.status.success(), "vitrine config failed: {}", stderr(out));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The settings of the one command `vitrine config COMMAND --json` printed.
fn settings(out: &Output) -> Value {
    let mut r = reports(out);
    assert_eq!(r.len(), 1);
    r.remove(0)["settings"].take()
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_file_value_is_overridden_by_the_environment_and_the_environment_by_a_flag() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "vitrine.toml",
        "queue = 8\nbind = \"127.0.0.1:9000\"\nmax_upload = 1000\nadmin_key = \"from-the-file\"\nfetch_retries = 7\n",
    );
    let out = run(vitrine(dir.path())
        .args(["config", "serve", "--json", "--max-upload", "3000", "--config"])
        .arg(&file)
        .env("VITRINE_BIND", "127.0.0.1:9001")
        .env("VITRINE_MAX_UPLOAD", "2000"));
    let s = settings(&out);
    let f = file.display().to_string();
    assert_eq!(s["queue"], serde_json::json!({"value": 8, "source": "file", "from": f}));
    assert_eq!(s["bind"], serde_json::json!({"value": "127.0.0.1:9001", "source": "env", "from": "VITRINE_BIND"}));
    assert_eq!(s["max_upload"], serde_json::json!({"value": 3000, "source": "flag", "from": "--max-upload"}));
    assert_eq!(s["fetch_retries"]["value"], 7, "the service's ingest settings come from the file too");
    assert_eq!(s["admin_key"], serde_json::json!({"value": "***", "source": "file", "from": f}), "secrets are masked");
    assert_eq!(s["ef_search"], serde_json::json!({"value": 128, "source": "default"}));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("from-the-file"));
}

#[test]
fn vitrine_config_and_the_config_flag_both_name_the_file_and_the_flag_wins() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.toml", "batch = 5\n");
    let b = write(dir.path(), "b.toml", "batch = 6\n");
    let by_env = settings(&run(vitrine(dir.path()).args(["config", "index", "--json"]).env("VITRINE_CONFIG", &a)));
    assert_eq!(by_env["batch"]["value"], 5);
    assert_eq!(by_env["batch"]["from"], a.display().to_string());
    let both = run(vitrine(dir.path()).args(["config", "index", "--json", "--config"]).arg(&b).env("VITRINE_CONFIG", &a));
    assert_eq!(settings(&both)["batch"]["value"], 6);
    // `--config` is global: it may also come after the command's own flags, for every command.
    let out = run(vitrine(dir.path()).args(["config", "embed", "image", "--json", "--config"]).arg(&b));
    assert_eq!(settings(&out)["batch"]["value"], 6);
}

#[test]
fn every_existing_flag_and_variable_still_sets_its_setting() {
    let dir = tempfile::tempdir().unwrap();
    let flags = run(vitrine(dir.path()).args([
        "config",
        "serve",
        "--json",
        "--data",
        "d",
        "--model",
        "m",
        "--device",
        "cpu",
        "--threads",
        "3",
        "--ort-lib",
        "/x/libonnxruntime.so",
        "--bind",
        "127.0.0.1:1",
        "--admin-key",
        "a",
        "--search-key",
        "s",
        "--max-upload",
        "11",
        "--queue",
        "12",
        "--ef-search",
        "13",
        "--no-image-urls",
        "--allow-private-image-urls",
        "--batch",
        "14",
        "--checkpoint-secs",
        "15",
        "--fetch-timeout-secs",
        "16",
        "--fetch-retries",
        "17",
    ]));
    let s = settings(&flags);
    let want = serde_json::json!({
        "data": "d", "model": "m", "device": "cpu", "threads": 3, "ort_lib": "/x/libonnxruntime.so",
        "bind": "127.0.0.1:1", "admin_key": "***", "search_key": "***", "max_upload": 11, "queue": 12,
        "ef_search": 13, "no_image_urls": true, "allow_private_image_urls": true, "batch": 14,
        "checkpoint_secs": 15, "fetch_timeout_secs": 16, "fetch_retries": 17,
    });
    for (k, v) in want.as_object().unwrap() {
        assert_eq!(&s[k]["value"], v, "{k}");
        assert_eq!(s[k]["source"], "flag", "{k}");
    }
    let vars = [
        ("VITRINE_DATA", "d2", "data", serde_json::json!("d2")),
        ("VITRINE_MODEL", "m2", "model", serde_json::json!("m2")),
        ("VITRINE_DEVICE", "cuda", "device", serde_json::json!("cuda")),
        ("VITRINE_THREADS", "4", "threads", serde_json::json!(4)),
        ("VITRINE_ORT_LIB", "/y/lib.so", "ort_lib", serde_json::json!("/y/lib.so")),
        ("VITRINE_BIND", "127.0.0.1:2", "bind", serde_json::json!("127.0.0.1:2")),
        ("VITRINE_ADMIN_KEY", "a2", "admin_key", serde_json::json!("***")),
        ("VITRINE_SEARCH_KEY", "s2", "search_key", serde_json::json!("***")),
        ("VITRINE_MAX_UPLOAD", "21", "max_upload", serde_json::json!(21)),
        ("VITRINE_QUEUE", "22", "queue", serde_json::json!(22)),
        ("VITRINE_NO_IMAGE_URLS", "1", "no_image_urls", serde_json::json!(true)),
        ("VITRINE_ALLOW_PRIVATE_IMAGE_URLS", "true", "allow_private_image_urls", serde_json::json!(true)),
        ("VITRINE_MEDIA_ROOT", "/,/tmp", "media_root", serde_json::json!(["/", "/tmp"])),
    ];
    let mut cmd = vitrine(dir.path());
    cmd.args(["config", "serve", "--json"]);
    for (var, value, _, _) in &vars {
        cmd.env(var, value);
    }
    let s = settings(&run(&mut cmd));
    for (var, _, key, want) in &vars {
        assert_eq!(&s[key]["value"], want, "{var}");
        assert_eq!(s[key]["from"], *var, "{key}");
    }
}

#[test]
fn an_unknown_key_is_an_error_that_names_it_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "typo.toml", "data = \"x\"\nqeueu = 3\n");
    for args in [&["config", "serve"][..], &["rebuild"][..], &["delete", "sku-1"][..]] {
        let out = run(vitrine(dir.path()).args(args).arg("--config").arg(&file));
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains("unknown key `qeueu`") && err.contains("did you mean `queue`"), "{err}");
        assert!(err.contains("typo.toml"), "the error names the file: {err}");
    }
    assert!(!dir.path().join("x").exists(), "nothing ran on the data directory");
}

#[test]
fn a_key_of_another_command_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "all.toml", "data = \"shop\"\nbind = \"0.0.0.0:80\"\nfetch_retries = 1\nqueue = 3\n");
    let s = settings(&run(vitrine(dir.path()).args(["config", "rebuild", "--json", "--config"]).arg(&file)));
    assert_eq!(s.as_object().unwrap().keys().collect::<Vec<_>>(), ["backend", "data"]);
    assert_eq!(s["data"]["value"], "shop");
}

#[test]
fn a_missing_config_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(vitrine(dir.path()).args(["config", "serve"]).env("VITRINE_CONFIG", dir.path().join("nope.toml")));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("nope.toml"), "{}", stderr(&out));
}

#[test]
fn a_wrong_type_in_the_file_names_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in
        [("queue = \"many\"\n", "`queue`"), ("bind = 8080\n", "`bind`"), ("media_root = \"/tmp\"\n", "`media_root`")]
    {
        let file = write(dir.path(), "wrong.toml", text);
        // Overridden by a flag, the file is still wrong: it fails the same way.
        let out = run(vitrine(dir.path()).args(["config", "serve", "--queue", "2", "--config"]).arg(&file));
        assert_eq!(out.status.code(), Some(1), "{text}");
        let err = stderr(&out);
        assert!(err.contains(key) && err.contains("wrong.toml") && err.contains("invalid type"), "{text}: {err}");
    }
    let file = write(dir.path(), "broken.toml", "queue = \n");
    let err = stderr(&run(vitrine(dir.path()).args(["config", "serve", "--config"]).arg(&file)));
    assert!(err.contains("broken.toml") && err.contains("not valid TOML"), "{err}");
}

/// `vitrine serve` with these settings: it must refuse them at start, before it listens.
fn serve_refuses(dir: &Path, setup: impl FnOnce(&mut Command)) -> String {
    let mut cmd = vitrine(dir);
    cmd.args(["serve", "--data"]).arg(dir.join("data")).stdout(Stdio::null()).stderr(Stdio::piped());
    setup(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("vitrine serve started with invalid settings");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!dir.join("data").exists(), "nothing was opened before the settings were checked");
    stderr(&out)
}

#[test]
fn invalid_settings_fail_at_start_saying_what_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "zero.toml", "queue = 0\n");
    let err = serve_refuses(dir.path(), |c| {
        c.arg("--config").arg(&file).arg("--bind").arg("127.0.0.1:0");
    });
    assert!(err.contains("`queue` is 0") && err.contains("at least 1") && err.contains("zero.toml"), "{err}");

    let err = serve_refuses(dir.path(), |c| {
        c.env("VITRINE_MAX_UPLOAD", "0").arg("--bind").arg("127.0.0.1:0");
    });
    assert!(err.contains("`max_upload` is 0") && err.contains("env VITRINE_MAX_UPLOAD"), "{err}");

    let err = serve_refuses(dir.path(), |c| {
        c.args(["--bind", "not-an-address"]);
    });
    assert!(err.contains("`bind`") && err.contains("HOST:PORT") && err.contains("flag --bind"), "{err}");

    let missing = dir.path().join("no-such-images");
    let err = serve_refuses(dir.path(), |c| {
        c.arg("--media-root").arg(&missing).arg("--bind").arg("127.0.0.1:0");
    });
    assert!(err.contains("`media_root`") && err.contains("no-such-images"), "{err}");

    let err = serve_refuses(dir.path(), |c| {
        c.args(["--batch", "0", "--bind", "127.0.0.1:0"]);
    });
    assert!(err.contains("`batch` is 0"), "the ingest settings are checked for the service too: {err}");
}

#[test]
fn help_still_shows_every_default_and_variable() {
    let dir = tempfile::tempdir().unwrap();
    let help = String::from_utf8_lossy(&run(vitrine(dir.path()).args(["serve", "--help"])).stdout).into_owned();
    for want in [
        "[default: 20971520]",
        "[default: 128]",
        "[default: 127.0.0.1:8080]",
        "[default: 64]",
        "[env: VITRINE_QUEUE=]",
        "[env: VITRINE_ADMIN_KEY=]",
        "--media-root <DIR>",
        "--config <PATH>",
    ] {
        assert!(help.contains(want), "`vitrine serve --help` lacks {want}:\n{help}");
    }
    let help = String::from_utf8_lossy(&run(vitrine(dir.path()).args(["index", "--help"])).stdout).into_owned();
    assert!(help.contains("[default: 32]") && help.contains("--delete-missing"), "{help}");
}

#[test]
fn the_text_output_shows_values_and_sources() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(vitrine(dir.path()).args(["config", "serve", "--admin-key", "s3cret"]).env("VITRINE_QUEUE", "9"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.contains("no config file"), "{text}");
    let line = |key: &str| text.lines().find(|l| l.starts_with(&format!("{key} ="))).unwrap_or_else(|| panic!("{key}: {text}"));
    assert!(line("queue").contains("= 9") && line("queue").ends_with("# env VITRINE_QUEUE"), "{text}");
    assert!(line("admin_key").ends_with("# flag --admin-key") && !text.contains("s3cret"), "{text}");
    assert!(line("ef_search").ends_with("# default"), "{text}");
    assert!(text.contains("# search_key (not set)"), "{text}");
}

#[test]
fn the_example_file_parses_and_its_values_are_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let example = root().join("vitrine.example.toml");
    let defaults = reports(&run(vitrine(dir.path()).args(["config", "--json"])));
    let from_example = reports(&run(vitrine(dir.path()).args(["config", "--json", "--config"]).arg(&example)));
    assert_eq!(defaults.len(), 9, "serve, demo, index, delete, reindex, rebuild, snapshot, embed image, embed text");
    assert_eq!(defaults.len(), from_example.len());
    let text = std::fs::read_to_string(&example).unwrap();
    let mut from_file = 0;
    for (d, e) in defaults.iter().zip(&from_example) {
        assert_eq!(d["command"], e["command"]);
        for (key, setting) in e["settings"].as_object().unwrap() {
            let documented = text.lines().any(|l| l.starts_with(&format!("{key} = ")) || l.starts_with(&format!("# {key} = ")));
            assert!(documented, "vitrine.example.toml does not show `{key}`");
            if setting["source"] == "file" {
                from_file += 1;
                assert_eq!(
                    setting["value"], d["settings"][key]["value"],
                    "{}: `{key}` in the example is not the default",
                    d["command"]
                );
            }
        }
    }
    assert!(from_file > 40, "the example sets most keys of most commands ({from_file})");
}

#[test]
fn the_demo_does_not_follow_the_files_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "shop.toml", "data = \"shop\"\nqueue = 5\n");
    let s = settings(&run(vitrine(dir.path()).args(["config", "demo", "--json", "--config"]).arg(&file)));
    assert!(s["data"]["value"].as_str().unwrap().ends_with("data/demo"), "{s}");
    assert_eq!(s["data"]["from"], "vitrine demo");
    assert_eq!(s["queue"]["value"], 5, "the rest of the file applies");
    let s = settings(&run(vitrine(dir.path()).args(["config", "demo", "--json", "--data", "mine"])));
    assert_eq!(s["data"]["value"], "mine", "a flag still chooses");
}
