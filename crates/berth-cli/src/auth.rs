//! `berth auth can-i` and `berth auth whoami`: what the server lets you do, and who it takes
//! you for, asked of the server itself (a SelfSubjectAccessReview, a SelfSubjectRulesReview, a
//! SelfSubjectReview), so the answer is the one your requests get, as with kubectl.

use std::io::Write;

use anyhow::{Context, bail};
use berth_client::Client;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::Output;

#[derive(Subcommand, Debug, Clone)]
pub enum AuthCmd {
    /// Whether you may do something: prints yes or no, and exits 0 or 1
    ///
    /// `berth auth can-i create deployments -n shop`, `berth auth can-i get pods/log`,
    /// `berth auth can-i delete secret/db`, `berth auth can-i get /healthz`; `--list` prints
    /// every rule you hold in the namespace.
    CanI {
        /// The verb: get, list, watch, create, update, patch, delete, deletecollection, ...
        verb: Option<String>,
        /// The resource (`pods`, `deploy`, `deployments.apps`, `pods/log`, `secret/NAME`), or a
        /// path (`/healthz`)
        resource: Option<String>,
        /// In every namespace
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Print every rule you hold in the namespace instead
        #[arg(long, conflicts_with_all = ["verb", "resource"])]
        list: bool,
    },
    /// Show the user name and groups the server takes you for
    Whoami {
        #[arg(short = 'o', long, value_enum)]
        output: Option<Output>,
    },
}

/// What `can-i` asks about: `spec.resourceAttributes` or `spec.nonResourceAttributes`.
fn attributes(verb: &str, resource: &str, namespace: &str) -> anyhow::Result<Value> {
    if resource.starts_with('/') {
        return Ok(json!({"nonResourceAttributes": {"verb": verb, "path": resource}}));
    }
    // `pods/log` is a subresource; `secret/db` names one object.
    let (first, rest) = match resource.split_once('/') {
        Some((f, r)) => (f, Some(r)),
        None => (resource, None),
    };
    let kind = crate::resolve_kind(first)?;
    let is_sub = |r: &str| {
        matches!(
            r,
            "log"
                | "exec"
                | "attach"
                | "portforward"
                | "status"
                | "scale"
                | "binding"
                | "proxy"
                | "eviction"
                | "token"
        )
    };
    let (sub, name) = match rest {
        Some(r) if is_sub(r) => (r, ""),
        Some(r) => ("", r),
        None => ("", ""),
    };
    Ok(json!({"resourceAttributes": {
        "verb": verb, "group": kind.group, "version": kind.version, "resource": kind.plural,
        "subresource": sub, "name": name,
        "namespace": if kind.namespaced { namespace } else { "" },
    }}))
}

fn list(v: &Value) -> String {
    let items: Vec<&str> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    format!("[{}]", items.join(" "))
}

/// kubectl's `can-i --list` table: one row per rule.
fn rules_table(status: &Value) -> String {
    let mut rows = Vec::new();
    for r in status["resourceRules"].as_array().into_iter().flatten() {
        let groups: Vec<&str> = r["apiGroups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        for res in r["resources"].as_array().into_iter().flatten() {
            let res = res.as_str().unwrap_or("");
            for g in &groups {
                let name = if g.is_empty() {
                    res.to_string()
                } else {
                    format!("{res}.{g}")
                };
                rows.push(vec![
                    name,
                    "[]".into(),
                    list(&r["resourceNames"]),
                    list(&r["verbs"]),
                ]);
            }
        }
    }
    for r in status["nonResourceRules"].as_array().into_iter().flatten() {
        for url in r["nonResourceURLs"].as_array().into_iter().flatten() {
            rows.push(vec![
                String::new(),
                format!("[{}]", url.as_str().unwrap_or("")),
                "[]".into(),
                list(&r["verbs"]),
            ]);
        }
    }
    rows.sort();
    rows.dedup();
    crate::print::table(
        &["Resources", "Non-Resource URLs", "Resource Names", "Verbs"],
        &rows,
    )
}

fn review_kind(plural: &str) -> anyhow::Result<&'static berth_api::ResourceKind> {
    berth_api::kinds::resolve(plural).with_context(|| format!("this berth has no {plural}"))
}

/// Runs `berth auth ...`; returns the exit code.
pub async fn run(
    client: &Client,
    namespace: &str,
    cmd: AuthCmd,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    match cmd {
        AuthCmd::CanI {
            verb,
            resource,
            all_namespaces,
            list,
        } => {
            let ns = if all_namespaces { "" } else { namespace };
            if list {
                let kind = review_kind("selfsubjectrulesreviews")?;
                let body = json!({"apiVersion": kind.api_version(), "kind": kind.kind,
                    "spec": {"namespace": ns}});
                let answer = client.create(kind, None, &body, "").await?;
                write!(out, "{}", rules_table(&answer["status"]))?;
                return Ok(0);
            }
            let (Some(verb), Some(resource)) = (verb, resource) else {
                bail!("say what to check: `berth auth can-i VERB RESOURCE` (or --list)");
            };
            let kind = review_kind("selfsubjectaccessreviews")?;
            let body = json!({"apiVersion": kind.api_version(), "kind": kind.kind,
                "spec": attributes(&verb, &resource, ns)?});
            let answer = client.create(kind, None, &body, "").await?;
            let yes = answer["status"]["allowed"] == true;
            writeln!(out, "{}", if yes { "yes" } else { "no" })?;
            Ok(if yes { 0 } else { 1 })
        }
        AuthCmd::Whoami { output } => {
            let kind = review_kind("selfsubjectreviews")?;
            let body = json!({"apiVersion": kind.api_version(), "kind": kind.kind});
            let answer = client.create(kind, None, &body, "").await?;
            match output {
                Some(Output::Json) => writeln!(out, "{}", crate::print::to_json(&answer))?,
                Some(Output::Yaml) => write!(out, "{}", crate::print::to_yaml(&answer))?,
                _ => {
                    let info = &answer["status"]["userInfo"];
                    let rows = vec![
                        vec![
                            "Username".into(),
                            info["username"].as_str().unwrap_or("").into(),
                        ],
                        vec!["Groups".into(), list(&info["groups"])],
                    ];
                    write!(
                        out,
                        "{}",
                        crate::print::table(&["ATTRIBUTE", "VALUE"], &rows)
                    )?;
                }
            }
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_name_subresources_objects_and_paths() {
        let a = attributes("get", "pods/log", "shop").unwrap();
        assert_eq!(a["resourceAttributes"]["subresource"], "log");
        assert_eq!(a["resourceAttributes"]["namespace"], "shop");
        let a = attributes("delete", "secret/db", "shop").unwrap();
        assert_eq!(a["resourceAttributes"]["resource"], "secrets");
        assert_eq!(a["resourceAttributes"]["name"], "db");
        let a = attributes("create", "deployments.apps", "shop").unwrap();
        assert_eq!(a["resourceAttributes"]["group"], "apps");
        let a = attributes("list", "nodes", "shop").unwrap();
        assert_eq!(
            a["resourceAttributes"]["namespace"], "",
            "nodes are cluster-wide"
        );
        let a = attributes("get", "/healthz", "shop").unwrap();
        assert_eq!(a["nonResourceAttributes"]["path"], "/healthz");
        let e = attributes("get", "widgets", "shop").unwrap_err();
        assert!(
            e.to_string()
                .contains("doesn't have a resource type \"widgets\""),
            "{e}"
        );
    }

    #[test]
    fn the_rules_table_reads_like_kubectls() {
        let status = json!({"resourceRules": [
            {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews"]},
            {"verbs": ["get", "list"], "apiGroups": ["", "apps"], "resources": ["pods"], "resourceNames": ["a"]}],
            "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["/healthz"]}]});
        let t = rules_table(&status);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("Resources"), "{t}");
        assert!(
            t.contains("pods.apps") && t.contains("[get list]") && t.contains("[a]"),
            "{t}"
        );
        assert!(t.contains("[/healthz]"), "{t}");
    }
}
