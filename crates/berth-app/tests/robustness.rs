//! No input stops a controller or a server task: out-of-range durations and counts are refused
//! with the field or parameter named, a Deployment stored with numbers no clock can hold (from
//! before validation held them) leaves the Deployment controller working, across a restart
//! too; and history never shows a Secret's values, through the API or the CLI.

mod common;

use berth_api::kinds::resolve;
use berth_client::{Client, Method};
use common::{TestServer, eventually};
use serde_json::{Value, json};

fn deployment(name: &str, replicas: i64, deadline: Option<i64>) -> Value {
    let mut d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "host"}]}}}
    });
    if let Some(s) = deadline {
        d["spec"]["progressDeadlineSeconds"] = json!(s);
    }
    d
}

/// Waits until the Deployment has a ReplicaSet it owns, `replicas` pods of it, and a status
/// the controller wrote (Progressing, with the replicas counted).
async fn rolled_out(c: &Client, name: &str, replicas: i64) {
    let deploy = resolve("deploy").unwrap();
    let rs = resolve("rs").unwrap();
    let pods = resolve("po").unwrap();
    eventually(30, &format!("deployment {name} rolled out"), || async {
        let d = c.get(deploy, Some("default"), name).await.ok()?;
        let uid = d["metadata"]["uid"].as_str()?.to_string();
        let sets = c.list(rs, Some("default"), "").await.ok()?;
        let owned = sets["items"].as_array()?.iter().any(|s| {
            s["metadata"]["ownerReferences"][0]["uid"] == uid.as_str()
                && s["spec"]["replicas"] == replicas
        });
        let ps = c
            .list(
                pods,
                Some("default"),
                &format!("labelSelector=app%3D{name}"),
            )
            .await
            .ok()?;
        let n = ps["items"].as_array()?.len() as i64;
        let progressing = d["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Progressing" && c["status"] == "True");
        (owned && n == replicas && d["status"]["replicas"] == replicas && progressing).then_some(())
    })
    .await;
}

/// Writes a Deployment straight into the store, past validation, as one stored before
/// validation held its numbers to int32 would be.
async fn store_unchecked(t: &TestServer, name: &str) {
    let huge = i64::MAX;
    let mut d = deployment(name, 1, Some(huge));
    d["metadata"]["uid"] = json!(format!("0000aaaa-0000-4000-8000-{:012}", name.len()));
    d["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    d["metadata"]["generation"] = json!(1);
    d["spec"]["revisionHistoryLimit"] = json!(huge);
    d["spec"]["strategy"] = json!({"type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": huge, "maxUnavailable": huge}});
    // Defaulted as the API server stores every object (the numbers set above stay).
    let kind = resolve("deploy").unwrap();
    let mut obj = berth_api::object::Object::from_value(d).unwrap();
    berth_api::validate::apply_defaults(kind, &mut obj);
    let d = obj.into_value();
    let key = kind.key(Some("default"), name);
    t.server
        .as_ref()
        .unwrap()
        .store()
        .put(
            key.as_bytes(),
            d.to_string().as_bytes(),
            berth_store::Origin::new("test", "create"),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn the_deployment_controller_survives_any_progress_deadline_and_a_restart() {
    let mut t = TestServer::start_with(|o| o.controllers = true).await;
    let deploy = resolve("deploy").unwrap();
    // One past int32 is refused, naming the field.
    let e = t
        .admin
        .create(
            deploy,
            Some("default"),
            &deployment("too-long", 1, Some(1 << 31)),
            "",
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(422), "{e}");
    assert!(
        e.to_string().contains("spec.progressDeadlineSeconds"),
        "{e}"
    );
    // The biggest value validation accepts rolls out like any other.
    t.admin
        .create(
            deploy,
            Some("default"),
            &deployment("longest", 1, Some(i32::MAX as i64)),
            "",
        )
        .await
        .unwrap();
    // One stored with numbers past any clock: the controller gets through it too.
    store_unchecked(&t, "unchecked").await;
    t.admin
        .create(deploy, Some("default"), &deployment("other", 2, None), "")
        .await
        .unwrap();
    rolled_out(&t.admin, "longest", 1).await;
    rolled_out(&t.admin, "unchecked", 1).await;
    rolled_out(&t.admin, "other", 2).await;

    // Started again on the same data, with the unchecked Deployment still stored, the
    // controller works on: a new Deployment rolls out.
    let running = t.server.take().unwrap();
    running.shutdown().await;
    let mut opts = berth_app::ServerOptions::new(t.dir.path());
    opts.listen = "127.0.0.1:0".parse().unwrap();
    let again = berth_app::start(opts).await.unwrap();
    let admin = Client::new(&again.url, &again.token, &again.ca_pem);
    t.server = Some(again);
    admin
        .create(deploy, Some("default"), &deployment("after", 3, None), "")
        .await
        .unwrap();
    rolled_out(&admin, "after", 3).await;
    t.stop().await;
}

#[tokio::test]
async fn query_parameters_out_of_range_get_400_naming_them() {
    let t = TestServer::start().await;
    let c = &t.admin;
    let cases = [
        (
            "/api/v1/namespaces/default/pods?watch=true&timeoutSeconds=18446744073709551615",
            "timeoutSeconds",
        ),
        (
            "/api/v1/namespaces/default/pods?watch=true&timeoutSeconds=-1",
            "timeoutSeconds",
        ),
        (
            "/api/v1/namespaces/default/pods?timeoutSeconds=2147483648",
            "timeoutSeconds",
        ),
        ("/api/v1/namespaces/default/pods?limit=-1", "limit"),
        ("/api/v1/namespaces/default/pods?limit=lots", "limit"),
        (
            "/api/v1/namespaces/default/pods/p/log?sinceSeconds=0",
            "sinceSeconds",
        ),
        (
            "/api/v1/namespaces/default/pods/p/log?sinceSeconds=9223372036854775807",
            "sinceSeconds",
        ),
        (
            "/api/v1/namespaces/default/pods/p/log?tailLines=-2",
            "tailLines",
        ),
        (
            "/api/v1/namespaces/default/pods/p/log?limitBytes=0",
            "limitBytes",
        ),
        (
            "/api/v1/namespaces/default/pods/p/log?sinceSeconds=5&sinceTime=2026-01-01T00:00:00Z",
            "sinceSeconds",
        ),
        (
            "/api/v1/namespaces/default/pods/p/log?sinceTime=yesterday",
            "sinceTime",
        ),
    ];
    for (path, param) in cases {
        let r = c.raw(Method::GET, path, None).await.unwrap();
        let s: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(r.status, 400, "{path}: {s}");
        assert!(
            s["message"].as_str().unwrap_or("").contains(param),
            "{path}: {s}"
        );
    }
    let cm = resolve("cm").unwrap();
    c.create(
        cm,
        Some("default"),
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keep"}}),
        "",
    )
    .await
    .unwrap();
    for (path, body) in [
        (
            "/api/v1/namespaces/default/configmaps/keep?gracePeriodSeconds=2147483648",
            None,
        ),
        (
            "/api/v1/namespaces/default/configmaps/keep?gracePeriodSeconds=-1",
            None,
        ),
        (
            "/api/v1/namespaces/default/configmaps/keep",
            Some(json!({"gracePeriodSeconds": 9223372036854775807i64})),
        ),
    ] {
        let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
        let r = c.raw(Method::DELETE, path, body).await.unwrap();
        let s: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(r.status, 400, "{path}: {s}");
        assert!(
            s["message"]
                .as_str()
                .unwrap_or("")
                .contains("gracePeriodSeconds"),
            "{s}"
        );
    }
    // Nothing was deleted by the refused requests; a good one still works.
    c.get(cm, Some("default"), "keep").await.unwrap();
    let r = c
        .raw(
            Method::DELETE,
            "/api/v1/namespaces/default/configmaps/keep?gracePeriodSeconds=2147483647",
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    t.stop().await;
}

const PLAIN: [&str; 3] = [
    "s3cr3t-first-password",
    "s3cr3t-second-password",
    "tok-value-kept",
];

fn base64(s: &str) -> String {
    berth_api::base64::encode(s.as_bytes())
}

/// Fails when `text` holds any of the Secret's values, plain or base64.
fn assert_no_values(what: &str, text: &str) {
    for v in PLAIN {
        assert!(!text.contains(v), "{what} shows {v}:\n{text}");
        assert!(
            !text.contains(&base64(v)),
            "{what} shows {v} in base64:\n{text}"
        );
    }
}

#[tokio::test]
async fn history_of_a_secret_names_changed_keys_never_values() {
    let t = TestServer::start().await;
    let c = &t.admin;
    let secret = resolve("secret").unwrap();
    let made = c
        .create(
            secret,
            Some("default"),
            &json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "db", "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration":
                        json!({"stringData": {"password": PLAIN[0]}}).to_string()}},
                "stringData": {"password": PLAIN[0], "token": PLAIN[2]}}),
            "",
        )
        .await
        .unwrap();
    c.patch(
        secret,
        Some("default"),
        "db",
        "application/merge-patch+json",
        &json!({"data": {"password": base64(PLAIN[1])}}),
        "",
    )
    .await
    .unwrap();
    c.patch(
        secret,
        Some("default"),
        "db",
        "application/merge-patch+json",
        &json!({"data": {"token": null, "extra": base64("x")}}),
        "",
    )
    .await
    .unwrap();

    // The API: each revision says which keys changed, and hides every value.
    let h = c
        .history("resource=secrets&namespace=default&name=db")
        .await
        .unwrap();
    assert_no_values("the history API", &h.to_string());
    let changes: Vec<Vec<(String, String)>> = h["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            i["dataChanges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    (
                        c["key"].as_str().unwrap().to_string(),
                        c["change"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .collect();
    let pair = |k: &str, c: &str| (k.to_string(), c.to_string());
    assert_eq!(
        changes,
        vec![
            vec![pair("password", "added"), pair("token", "added")],
            vec![pair("password", "changed")],
            vec![pair("extra", "added"), pair("token", "removed")],
        ],
        "{h}"
    );
    assert_eq!(
        h["items"][1]["object"]["data"]["password"],
        "(hidden, version 2)"
    );
    assert_eq!(
        h["items"][1]["object"]["data"]["token"],
        "(hidden, version 1)"
    );
    // One past revision: hidden too.
    let rev = made["metadata"]["resourceVersion"].as_str().unwrap();
    let past = c
        .history(&format!(
            "resource=secrets&namespace=default&name=db&revision={rev}"
        ))
        .await
        .unwrap();
    assert_eq!(past["data"]["password"], "(hidden)");
    assert_no_values("a past revision", &past.to_string());

    // The CLI: the table and the diff name the keys and 'changed', never a value.
    let conn = berth_cli::Conn {
        kubeconfig: Some(t.server.as_ref().unwrap().kubeconfig.clone()),
        namespace: None,
    };
    for diff in [false, true] {
        for output in [
            None,
            Some(berth_cli::Output::Json),
            Some(berth_cli::Output::Yaml),
        ] {
            let mut out = Vec::new();
            let verb = berth_cli::Verb::History {
                target: vec!["secret/db".into()],
                denied: false,
                diff,
                status: false,
                limit: 50,
                output,
            };
            assert_eq!(berth_cli::run(&conn, verb, &mut out).await.unwrap(), 0);
            let text = String::from_utf8(out).unwrap();
            assert_no_values("berth history", &text);
            assert!(
                text.contains("password") && text.contains("changed"),
                "{text}"
            );
            if output.is_none() {
                assert!(text.contains("data: password changed"), "{text}");
                assert!(text.contains("extra added, token removed"), "{text}");
            }
        }
    }
    let mut out = Vec::new();
    let verb = berth_cli::Verb::Get(berth_cli::get::GetArgs {
        kind: "secret".into(),
        names: vec!["db".into()],
        selector: None,
        field_selector: None,
        all_namespaces: false,
        output: Some(berth_cli::Output::Yaml),
        watch: false,
        revision: Some(rev.parse().unwrap()),
        at: None,
    });
    berth_cli::run(&conn, verb, &mut out).await.unwrap();
    assert_no_values("berth get --revision", &String::from_utf8(out).unwrap());

    // Export leaves the Secret out and says so; the current values come only on request,
    // and never a past revision's.
    let mut out = Vec::new();
    let verb = berth_cli::Verb::Export {
        revision: None,
        at: None,
        include_secrets: false,
    };
    berth_cli::run(&conn, verb, &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_no_values("berth export", &text);
    assert!(text.contains("# left out: secret default/db"), "{text}");
    let list = c.export("").await.unwrap();
    assert_no_values("export", &list.to_string());
    assert_eq!(list["omittedSecrets"], json!(["default/db"]));
    let e = c
        .export(&format!("revision={rev}&includeSecrets=true"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(400), "{e}");
    assert!(e.to_string().contains("includeSecrets"), "{e}");
    let with = c.export("includeSecrets=true").await.unwrap();
    assert!(
        with.to_string().contains(&base64(PLAIN[1])),
        "the current value on request: {with}"
    );
    assert!(!with.to_string().contains(&base64(PLAIN[0])));
    t.stop().await;
}
