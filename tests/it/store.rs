//! The telemetry store against real PostgreSQL and SQLite.

use chrono::{Duration, TimeZone, Utc};
use inframind::simulate::demo_runs;
use inframind::telemetry::ingest::{parse_csv, parse_json_lines};
use inframind::telemetry::{ingest_rows, Store};

use crate::harness::both_stores;

fn t0() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
}

#[tokio::test]
async fn runs_round_trip_and_duplicates_are_stored_once() {
    for (store, _keep) in both_stores().await {
        let runs = demo_runs(450, t0(), 11);
        let first = store.insert_runs(&runs, t0()).await.unwrap();
        assert_eq!(
            (first.inserted, first.duplicates),
            (450, 0),
            "{:?}",
            store.backend()
        );
        let again = store.insert_runs(&runs[100..300], t0()).await.unwrap();
        assert_eq!((again.inserted, again.duplicates), (0, 200));
        assert_eq!(store.count_runs().await.unwrap(), 450);

        // Everything survives the round trip exactly.
        let ok: Vec<_> = runs.iter().filter(|r| r.success).cloned().collect();
        let back = store.recent_successful(None, 10_000).await.unwrap();
        assert_eq!(back, ok, "{:?}", store.backend());
    }
}

#[tokio::test]
async fn the_queries_the_product_needs() {
    for (store, _keep) in both_stores().await {
        let runs = demo_runs(600, t0(), 12);
        store.insert_runs(&runs, t0()).await.unwrap();
        let api: Vec<_> = runs.iter().filter(|r| r.pipeline == "acme/api").collect();
        let api_ok: Vec<_> = api.iter().filter(|r| r.success).collect();

        // Last N successful of one pipeline, oldest first.
        let last5 = store.recent_successful(Some("acme/api"), 5).await.unwrap();
        let expect: Vec<_> = api_ok[api_ok.len() - 5..]
            .iter()
            .map(|r| (**r).clone())
            .collect();
        assert_eq!(last5, expect);

        // Baseline: the last successful config.
        let last = store.last_successful("acme/api").await.unwrap().unwrap();
        assert_eq!(&last, **api_ok.last().unwrap());
        assert!(store
            .last_successful("nobody/nothing")
            .await
            .unwrap()
            .is_none());

        // Strictly before a time.
        let cut = api_ok[10].started_at;
        let before = store.successful_before("acme/api", cut, 3).await.unwrap();
        assert_eq!(
            before.iter().map(|r| r.run_id.clone()).collect::<Vec<_>>(),
            api_ok[7..10]
                .iter()
                .map(|r| r.run_id.clone())
                .collect::<Vec<_>>()
        );

        // Aggregates.
        let stats = store.pipeline_stats("acme/api").await.unwrap();
        assert_eq!(stats.runs, api.len().min(inframind::stats::STATS_WINDOW));
        assert_eq!(stats.last_success, Some(last.config()));
        assert!(stats.rss_p95_gb.unwrap() > 0.0);
        assert!(stats.max_success_concurrency.unwrap() >= 1);

        assert_eq!(store.pipelines().await.unwrap().len(), 6);
    }
}

#[tokio::test]
async fn counting_runs_since_a_time_uses_ingestion_time() {
    for (store, _keep) in both_stores().await {
        let runs = demo_runs(50, t0(), 13);
        store.insert_runs(&runs[..20], t0()).await.unwrap();
        store
            .insert_runs(&runs[20..], t0() + Duration::hours(2))
            .await
            .unwrap();
        assert_eq!(
            store
                .count_runs_since(t0() + Duration::hours(1))
                .await
                .unwrap(),
            30
        );
        assert_eq!(store.count_runs_since(t0()).await.unwrap(), 50);
    }
}

#[tokio::test]
async fn ingestion_rejects_bad_rows_with_their_field_and_keeps_the_rest() {
    let jsonl = r#"{"pipeline":"a","cpu_req":2,"mem_req_gb":4,"concurrency":2,"duration_s":100,"success":1,"started_at":1764000000,"run_id":"r1","colour":"red"}
{"pipeline":"a","cpu_req":-2,"mem_req_gb":4,"concurrency":2,"duration_s":100,"success":1,"started_at":1764000000}
not json
{"pipeline":"a","cpu_req":2,"mem_req_gb":4,"concurrency":2,"duration_s":100,"success":1,"started_at":1764000000,"cache_hit_ratio":2}
{"pipeline":"a","cpu_req":2,"mem_req_gb":4,"concurrency":2,"duration_s":100,"success":1,"started_at":1764000000,"run_id":"r1"}
{"pipeline":"a","cpu_req":3,"mem_req_gb":4,"concurrency":2,"duration_s":90,"success":0,"started_at":1764000000,"run_id":"r2"}
"#;
    let csv = "pipeline,cpu_req,mem_req_gb,concurrency,duration_s,success,run_id,started_at\nb,2,4,2,100,1,c1,1764000000\nb,2,4,0,100,1,c2,1764000000\nb,2,4,2,100,1,c1,1764000000\n";
    for (store, _keep) in both_stores().await {
        let report = ingest_rows(&store, parse_json_lines(jsonl), t0())
            .await
            .unwrap();
        assert_eq!(report.accepted, 2);
        assert_eq!(report.duplicates, 1);
        let rejected: Vec<_> = report
            .rejected
            .iter()
            .map(|r| (r.row, r.field.as_str()))
            .collect();
        assert_eq!(
            rejected,
            vec![(2, "cpu_req"), (3, "<row>"), (4, "cache_hit_ratio")]
        );
        assert_eq!(report.unknown_fields, vec!["colour".to_string()]);

        let report = ingest_rows(&store, parse_csv(csv).unwrap(), t0())
            .await
            .unwrap();
        assert_eq!((report.accepted, report.duplicates), (1, 1));
        assert_eq!(report.rejected[0].field, "concurrency");
        assert_eq!(store.count_runs().await.unwrap(), 3);
    }
}

#[tokio::test]
async fn an_unreachable_database_is_a_clear_error() {
    let err = Store::connect("postgres://postgres@127.0.0.1:1/test")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("connecting to postgres://postgres@127.0.0.1:1/test"),
        "{err}"
    );
    let err = Store::connect("mysql://x").await.unwrap_err().to_string();
    assert!(
        err.contains("must start with postgres:// or sqlite:"),
        "{err}"
    );
}

#[tokio::test]
async fn reporter_and_watcher_rows_for_one_pod_merge_in_either_order() {
    for (store, _keep) in both_stores().await {
        let base = demo_runs(1, t0(), 14).remove(0);
        // What the in-pod reporter knows: telemetry, and a provisional outcome.
        let reporter = inframind::record::RunRecord {
            run_id: "pod-a".into(),
            duration_s: 100.0,
            success: true,
            oom_killed: false,
            ..base.clone()
        };
        // What the watcher knows: how it ended; no telemetry.
        let watcher = inframind::record::RunRecord {
            run_id: "pod-a".into(),
            duration_s: 123.0,
            success: false,
            oom_killed: true,
            retry_count: 2,
            max_rss_gb: None,
            io_read_gb: None,
            io_write_gb: None,
            cache_hit_ratio: None,
            num_steps: None,
            avg_step_duration_s: None,
            ..base.clone()
        };
        // Reporter first, then the watcher.
        assert_eq!(
            store
                .insert_runs(std::slice::from_ref(&reporter), t0())
                .await
                .unwrap()
                .inserted,
            1
        );
        assert!(store.record_outcome(&watcher, t0()).await.unwrap());
        assert!(
            !store.record_outcome(&watcher, t0()).await.unwrap(),
            "an outcome is recorded once"
        );
        // Watcher first, then the reporter.
        let w2 = inframind::record::RunRecord {
            run_id: "pod-b".into(),
            ..watcher.clone()
        };
        let r2 = inframind::record::RunRecord {
            run_id: "pod-b".into(),
            ..reporter.clone()
        };
        assert!(store.record_outcome(&w2, t0()).await.unwrap());
        let merged = store
            .insert_runs(std::slice::from_ref(&r2), t0())
            .await
            .unwrap();
        assert_eq!(
            (merged.inserted, merged.duplicates),
            (1, 0),
            "the reporter's telemetry was merged"
        );
        let again = store.insert_runs(&[r2], t0()).await.unwrap();
        assert_eq!(
            (again.inserted, again.duplicates),
            (0, 1),
            "nothing new: a duplicate"
        );
        for id in ["pod-a", "pod-b"] {
            let row = store
                .recent_runs(&base.pipeline, 10)
                .await
                .unwrap()
                .into_iter()
                .find(|r| r.run_id == id)
                .unwrap();
            assert_eq!(
                (row.duration_s, row.success, row.oom_killed, row.retry_count),
                (123.0, false, true, 2),
                "{id}: the watcher's outcome"
            );
            assert_eq!(
                (row.max_rss_gb, row.num_steps),
                (reporter.max_rss_gb, reporter.num_steps),
                "{id}: the reporter's telemetry"
            );
        }
    }
}
