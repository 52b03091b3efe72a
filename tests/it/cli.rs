//! The real `inframind` binary, end to end.

use std::path::Path;
use std::process::{Command, Output};

use crate::harness::pg_schema_url;

fn inframind(dir: &Path, db: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_inframind"))
        .args(args)
        .current_dir(dir)
        .env("INFRAMIND_DATABASE_URL", db)
        .env("INFRAMIND_MODELS_DIR", dir.join("models"))
        .env_remove("INFRAMIND_REDIS_URL")
        .output()
        .expect("running inframind")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn quickstart_trains_a_useful_model_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("im.db").display());
    let out = ok(&inframind(
        dir.path(),
        &db,
        &[
            "quickstart",
            "--runs",
            "1500",
            "--trees",
            "30",
            "--limit",
            "800",
        ],
    ));
    assert!(out.contains("R²"), "{out}");
    assert!(out.contains("top features"), "{out}");

    let list = ok(&inframind(
        dir.path(),
        &db,
        &["models", "list", "--output", "json"],
    ));
    let models: serde_json::Value = serde_json::from_str(&list).unwrap();
    let m = &models[0];
    assert_eq!(models.as_array().unwrap().len(), 1);
    assert_eq!(m["window"]["rows"], 800);
    assert!(m["random_holdout"]["r2"].as_f64().unwrap() > 0.7, "{m}");
    assert!(m["temporal_holdout"]["r2"].as_f64().unwrap() > 0.6, "{m}");
    assert_eq!(m["sha256"].as_str().unwrap().len(), 64);

    let version = m["version"].as_str().unwrap().to_string();
    // Status commands print data too (`-o`).
    let active: serde_json::Value = serde_json::from_str(&ok(&inframind(
        dir.path(),
        &db,
        &["models", "active", "-o", "json"],
    )))
    .unwrap();
    assert_eq!(active["active"], version.as_str());
    let promoted: serde_json::Value = serde_yaml::from_str(&ok(&inframind(
        dir.path(),
        &db,
        &["models", "promote", &version, "-o", "yaml"],
    )))
    .unwrap();
    assert_eq!(promoted["active"], version.as_str());
    let explained = ok(&inframind(
        dir.path(),
        &db,
        &["explain", &version, "--output", "json"],
    ));
    let e: serde_json::Value = serde_json::from_str(&explained).unwrap();
    assert_eq!(e["importances"].as_array().unwrap().len(), 10);

    // A tampered artifact is refused with a clear reason.
    let artifact = dir
        .path()
        .join("models")
        .join(m["artifact"].as_str().unwrap());
    let mut bytes = std::fs::read(&artifact).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&artifact, bytes).unwrap();
    let out = inframind(dir.path(), &db, &["explain", &version]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"));
}

#[test]
fn ingest_reports_rejections_and_strict_fails() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("im.db").display());
    let file = dir.path().join("runs.csv");
    std::fs::write(&file, "pipeline,cpu_req,mem_req_gb,concurrency,duration_s,success,started_at,extra\na,2,4,2,100,1,1764000000,x\na,2,4,2,-5,1,1764000000,y\n").unwrap();
    let out = inframind(dir.path(), &db, &["ingest", file.to_str().unwrap()]);
    assert!(ok(&out).contains("accepted 1, rejected 1, duplicates 0"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("row 2: field `duration_s`"), "{stderr}");
    assert!(stderr.contains("extra"), "{stderr}");
    let strict = inframind(
        dir.path(),
        &db,
        &["ingest", "--strict", file.to_str().unwrap()],
    );
    assert!(!strict.status.success());
    assert!(ok(&inframind(
        dir.path(),
        &db,
        &["ingest", "--output", "json", file.to_str().unwrap()]
    ))
    .contains("\"duplicates\": 1"));
}

#[tokio::test]
async fn simulate_ingest_and_train_against_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let db = pg_schema_url().await;
    let file = dir.path().join("runs.jsonl");
    ok(&inframind(
        dir.path(),
        &db,
        &["simulate", "--runs", "700", "--out", file.to_str().unwrap()],
    ));
    let out = ok(&inframind(
        dir.path(),
        &db,
        &["ingest", file.to_str().unwrap()],
    ));
    assert!(out.starts_with("accepted 700, rejected 0"), "{out}");
    let out = ok(&inframind(
        dir.path(),
        &db,
        &[
            "train", "--trees", "20", "--split", "temporal", "--output", "json",
        ],
    ));
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(j["version"].as_str().unwrap().starts_with("model_v"));
    assert!(j["temporal_holdout"]["r2"].as_f64().unwrap() > 0.5, "{j}");
    assert_eq!(j["temporal_holdout"]["test_rows"], 100);
}

#[test]
fn recommend_uses_the_store_and_the_active_model() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("im.db").display());
    // Cold start: no model yet.
    let file = dir.path().join("runs.jsonl");
    ok(&inframind(
        dir.path(),
        &db,
        &["simulate", "--runs", "900", "--out", file.to_str().unwrap()],
    ));
    ok(&inframind(
        dir.path(),
        &db,
        &["ingest", file.to_str().unwrap()],
    ));
    let cold: serde_json::Value = serde_json::from_str(&ok(&inframind(
        dir.path(),
        &db,
        &["recommend", "--pipeline", "acme/api", "--output", "json"],
    )))
    .unwrap();
    assert_eq!(cold["cold_start"], true);
    assert_eq!(cold["confidence"], 0.0);
    assert_eq!(cold["baseline_source"], "last_success");

    ok(&inframind(dir.path(), &db, &["train", "--trees", "20"]));
    let args = [
        "recommend",
        "--pipeline",
        "acme/api",
        "--seed",
        "11",
        "--exploration-rate",
        "0",
        "--max-cpu",
        "6",
        "--output",
        "json",
    ];
    let warm: serde_json::Value =
        serde_json::from_str(&ok(&inframind(dir.path(), &db, &args))).unwrap();
    assert_eq!(warm["cold_start"], false);
    assert!(warm["model_version"]
        .as_str()
        .unwrap()
        .starts_with("model_v"));
    assert!(warm["config"]["cpu"].as_f64().unwrap() <= 6.0);
    assert!(
        warm["predicted_duration_s"].as_f64().unwrap()
            <= warm["baseline_duration_s"].as_f64().unwrap()
    );
    // Same seed, same decision.
    let again: serde_json::Value =
        serde_json::from_str(&ok(&inframind(dir.path(), &db, &args))).unwrap();
    assert_eq!(warm, again);
    // Bad flags are refused with a reason.
    let bad = inframind(
        dir.path(),
        &db,
        &[
            "recommend",
            "--pipeline",
            "x",
            "--min-cpu",
            "8",
            "--max-cpu",
            "2",
        ],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("minimum bound"));
}
