//! HTTP: routing Kubernetes paths to the registry, authentication, body limits, content types.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_api::kinds::{self, ResourceKind};
use berth_api::object::Object;
use berth_api::selector::{FieldSelector, LabelSelector};
use serde_json::Value;

use crate::ApiServer;
use crate::auth::UserInfo;
use crate::error::{ApiError, ApiResult};
use crate::patch::PatchType;
use crate::registry::{DeleteOptions, ListOptions, Propagation, list_body};
use crate::{discovery, history};

/// Where a path leads.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Api,
    Apis,
    Group(String),
    Resources {
        group: String,
        version: String,
    },
    Version,
    Health,
    /// kubectl's schema download for client-side validation.
    OpenApiV2,
    Collection {
        kind: &'static ResourceKind,
        ns: Option<String>,
    },
    Object {
        kind: &'static ResourceKind,
        ns: Option<String>,
        name: String,
        sub: Option<String>,
    },
    History,
    Revisions,
    Export,
    /// The audit log's recent events.
    Audit,
    /// The key/value tree: a key.
    Kv(String),
    /// `nodes/NAME/proxy/PATH`: a GET passed to the node's agent (metrics, stats, health).
    NodeProxy {
        node: String,
        path: String,
    },
    /// `metrics.k8s.io/v1beta1`: `nodes` or `pods`, from the node agents.
    Metrics {
        resource: String,
        ns: Option<String>,
        name: Option<String>,
    },
}

use berth_api::url::decode as percent_decode;

fn not_found(path: &str) -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        format!("the server could not find the requested resource ({path})"),
    )
}

/// Maps a URL path to a route.
pub fn route(path: &str) -> ApiResult<Route> {
    let segs: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let (group, version, rest): (&str, &str, &[&str]) = match s.as_slice() {
        ["healthz" | "readyz" | "livez", ..] => return Ok(Route::Health),
        ["version"] => return Ok(Route::Version),
        ["openapi", "v2"] => return Ok(Route::OpenApiV2),
        ["api"] => return Ok(Route::Api),
        ["apis"] => return Ok(Route::Apis),
        ["apis", g] => return Ok(Route::Group(g.to_string())),
        ["api", v] => {
            return Ok(Route::Resources {
                group: String::new(),
                version: v.to_string(),
            });
        }
        ["apis", g, v] => {
            return Ok(Route::Resources {
                group: g.to_string(),
                version: v.to_string(),
            });
        }
        ["apis", "berth.dev", "v1", "history"] => return Ok(Route::History),
        ["apis", "berth.dev", "v1", "revisions"] => return Ok(Route::Revisions),
        ["apis", "berth.dev", "v1", "export"] => return Ok(Route::Export),
        ["apis", "berth.dev", "v1", "audit"] => return Ok(Route::Audit),
        ["api", "v1", "nodes", node, "proxy", rest @ ..] => {
            return Ok(Route::NodeProxy {
                node: node.to_string(),
                path: rest
                    .iter()
                    .map(|s| berth_api::url::encode(s))
                    .collect::<Vec<_>>()
                    .join("/"),
            });
        }
        ["apis", "kv.berth.dev", "v1", "keys", rest @ ..] => {
            return Ok(Route::Kv(crate::kv::key_of(rest)?));
        }
        ["apis", "metrics.k8s.io", "v1beta1", rest @ ..] => {
            let metrics = |resource: &str, ns: Option<&str>, name: Option<&str>| Route::Metrics {
                resource: resource.to_string(),
                ns: ns.map(String::from),
                name: name.map(String::from),
            };
            return match rest {
                ["nodes"] => Ok(metrics("nodes", None, None)),
                ["nodes", name] => Ok(metrics("nodes", None, Some(name))),
                ["pods"] => Ok(metrics("pods", None, None)),
                ["namespaces", ns, "pods"] => Ok(metrics("pods", Some(ns), None)),
                ["namespaces", ns, "pods", name] => Ok(metrics("pods", Some(ns), Some(name))),
                _ => Err(not_found(path)),
            };
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(not_found(path)),
    };
    let kind = |plural: &str| {
        kinds::by_group_plural(group, version, plural).ok_or_else(|| not_found(path))
    };
    match rest {
        ["namespaces", ns, plural] if *plural != "status" && *plural != "finalize" => {
            let k = kind(plural)?;
            Ok(Route::Collection {
                kind: k,
                ns: k.namespaced.then(|| ns.to_string()),
            })
        }
        ["namespaces", ns, plural, name] => Ok(Route::Object {
            kind: kind(plural)?,
            ns: Some(ns.to_string()),
            name: name.to_string(),
            sub: None,
        }),
        ["namespaces", ns, plural, name, sub] => Ok(Route::Object {
            kind: kind(plural)?,
            ns: Some(ns.to_string()),
            name: name.to_string(),
            sub: Some(sub.to_string()),
        }),
        [plural] => Ok(Route::Collection {
            kind: kind(plural)?,
            ns: None,
        }),
        [plural, name] => {
            let k = kind(plural)?;
            if k.namespaced {
                return Err(not_found(path));
            }
            Ok(Route::Object {
                kind: k,
                ns: None,
                name: name.to_string(),
                sub: None,
            })
        }
        [plural, name, sub] => {
            let k = kind(plural)?;
            if k.namespaced {
                return Err(not_found(path));
            }
            Ok(Route::Object {
                kind: k,
                ns: None,
                name: name.to_string(),
                sub: Some(sub.to_string()),
            })
        }
        _ => Err(not_found(path)),
    }
}

fn parse_query(raw: Option<&str>) -> HashMap<String, String> {
    berth_api::url::query_pairs(raw).into_iter().collect()
}

/// A query parameter that must be an integer from `min` to `max`: None when it is absent,
/// else the number, or a 400 naming the parameter, what it was given and the range.
pub(crate) fn query_int(
    q: &HashMap<String, String>,
    name: &str,
    min: i64,
    max: i64,
) -> ApiResult<Option<i64>> {
    let Some(v) = q.get(name) else {
        return Ok(None);
    };
    match v.parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(ApiError::bad_request(format!(
            "{name} {v:?} is not an integer from {min} to {max}"
        ))),
    }
}

/// The `timeoutSeconds` of a list or watch: 0 or more seconds, held to int32 as every
/// duration berth takes.
fn timeout_seconds(q: &HashMap<String, String>) -> ApiResult<Option<Duration>> {
    Ok(
        query_int(q, "timeoutSeconds", 0, berth_api::validate::MAX_INT32)?
            .map(|t| Duration::from_secs(t as u64)),
    )
}

fn truthy(q: &HashMap<String, String>, k: &str) -> bool {
    q.get(k)
        .is_some_and(|v| v == "1" || v == "true" || v.is_empty())
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [("content-type", "application/json")],
        serde_json::to_vec(v).unwrap_or_default(),
    )
        .into_response()
}

/// Reads a request body as an object: JSON, or YAML when the content type says so.
fn parse_body(headers: &HeaderMap, body: &[u8]) -> ApiResult<Object> {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let value: Value = if ct.starts_with(berth_api::protobuf::CONTENT_TYPE) {
        // kubectl posts RBAC bindings in protobuf; other kinds are refused with a 415 that
        // says to send JSON.
        berth_api::protobuf::decode(body).map_err(|e| {
            ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("the protobuf request body cannot be read: {e}"),
            )
        })?
    } else if ct.contains("yaml") {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::bad_request("the YAML body is not UTF-8"))?;
        serde_saphyr_value(text)?
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the request body is not valid JSON: {} at line {}, column {}",
                e.to_string().split(" at line").next().unwrap_or_default(),
                e.line(),
                e.column()
            ))
        })?
    };
    Object::from_value(value)
        .ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))
}

fn serde_saphyr_value(text: &str) -> ApiResult<Value> {
    let docs = berth_api::manifest::parse("request body", text)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    match docs.len() {
        1 => Ok(docs
            .into_iter()
            .next()
            .map(|d| d.object.into_value())
            .unwrap_or(Value::Null)),
        n => Err(ApiError::bad_request(format!(
            "the request body must hold exactly one object, found {n}"
        ))),
    }
}

/// Whether the client asked for server-side printing (`as=Table`), as kubectl get does.
fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split(',').next())
        .is_some_and(|first| first.contains("as=Table") && first.contains("g=meta.k8s.io"))
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A `meta.k8s.io/v1` `Table` of objects: the columns `berth get` shows, wide ones at
/// priority 1, each row carrying the object's metadata (or the object, or nothing, as
/// `includeObject` asks).
fn table_of(
    kind: &ResourceKind,
    items: &[Object],
    resource_version: &str,
    continue_token: Option<&str>,
    q: &HashMap<String, String>,
) -> Value {
    let now = now_nanos();
    let columns: Vec<Value> = berth_api::table::all_columns(kind)
        .into_iter()
        .enumerate()
        .map(|(i, (name, priority))| {
            let mut title = name.to_ascii_lowercase();
            if let Some(f) = title.get_mut(0..1) {
                f.make_ascii_uppercase();
            }
            serde_json::json!({"name": title, "type": "string", "format": if i == 0 && name == "NAME" { "name" } else { "" }, "description": "", "priority": priority})
        })
        .collect();
    let include = q
        .get("includeObject")
        .map(String::as_str)
        .unwrap_or("Metadata");
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let v = o.as_value();
            let cells = berth_api::table::row(kind, &v, true, now);
            let object = match include {
                "None" => Value::Null,
                "Object" => v,
                _ => serde_json::json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.metadata().cloned().unwrap_or_default()}),
            };
            serde_json::json!({"cells": cells, "object": object})
        })
        .collect();
    let mut meta = serde_json::Map::new();
    meta.insert(
        "resourceVersion".into(),
        Value::String(resource_version.to_string()),
    );
    if let Some(c) = continue_token {
        meta.insert("continue".into(), Value::String(c.to_string()));
    }
    serde_json::json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": columns, "rows": rows})
}

pub(crate) fn list_options(
    kind: &ResourceKind,
    q: &HashMap<String, String>,
) -> ApiResult<ListOptions> {
    let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
    let fields = FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str), kind.kind)
        .map_err(|e| ApiError::bad_request(format!("field selector: {e}")))?;
    let limit =
        query_int(q, "limit", 0, i64::MAX)?.map_or(0, |l| usize::try_from(l).unwrap_or(usize::MAX));
    // A list honours no timeout, but a bad one is still refused, as for a watch.
    timeout_seconds(q)?;
    let at_revision = match (
        q.get("resourceVersion"),
        q.get("resourceVersionMatch").map(String::as_str),
    ) {
        (Some(rv), Some("Exact")) => Some(
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
        _ => None,
    };
    Ok(ListOptions {
        labels,
        fields,
        limit,
        continue_token: q.get("continue").filter(|c| !c.is_empty()).cloned(),
        at_revision,
    })
}

fn delete_options(q: &HashMap<String, String>, body: &[u8]) -> ApiResult<DeleteOptions> {
    let mut policy = q.get("propagationPolicy").cloned();
    let mut opts = DeleteOptions {
        dry_run: q.get("dryRun").is_some_and(|d| d == "All"),
        ..Default::default()
    };
    if !body.is_empty() {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
        if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
            policy = Some(p.to_string());
        }
        if v.get("orphanDependents") == Some(&Value::Bool(true)) {
            policy = Some("Orphan".into());
        }
        if let Some(pre) = v.get("preconditions") {
            opts.precondition_uid = pre.get("uid").and_then(Value::as_str).map(String::from);
            opts.precondition_rv = pre
                .get("resourceVersion")
                .and_then(Value::as_str)
                .map(String::from);
        }
        if let Some(Value::Array(d)) = v.get("dryRun") {
            opts.dry_run |= d.iter().any(|x| x == "All");
        }
        if let Some(g) = v.get("gracePeriodSeconds").filter(|g| !g.is_null()) {
            opts.grace_period = Some(
                g.as_i64()
                    .filter(|g| (0..=berth_api::validate::MAX_INT32).contains(g))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "gracePeriodSeconds {g} is not an integer from 0 to {}",
                            berth_api::validate::MAX_INT32
                        ))
                    })?,
            );
        }
    }
    if let Some(g) = query_int(q, "gracePeriodSeconds", 0, berth_api::validate::MAX_INT32)? {
        opts.grace_period = Some(g);
    }
    opts.propagation = match policy.as_deref() {
        None => None,
        Some("Orphan") => Some(Propagation::Orphan),
        Some("Background") => Some(Propagation::Background),
        Some("Foreground") => Some(Propagation::Foreground),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy {other:?} is not one of Orphan, Background, Foreground"
            )));
        }
    };
    Ok(opts)
}

/// The one handler: authenticates, routes and answers every request.
pub async fn handle(State(s): State<Arc<ApiServer>>, req: axum::extract::Request) -> Response {
    let started = std::time::Instant::now();
    let received = berth_api::timefmt::now_nanos();
    let (mut parts, body) = req.into_parts();
    // Exec upgrades the connection; only its handler takes the upgrade.
    let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    // The connection's peer and the client certificate it presented (verified against the
    // cluster CA), put on every request by the accept loop (`berth_tls::serve`).
    let conn = parts.extensions.get::<berth_tls::ConnInfo>();
    let source_ip = conn.map(|c| c.peer.ip());
    // A revoked certificate (`berth user revoke`) names nobody: the request goes on as if it
    // had presented none.
    let cert_user = conn
        .and_then(|c| c.client_cert.as_ref())
        .filter(|der| !s.auth.revoked(&s.registry, der))
        .and_then(|der| berth_tls::client_subject(der));
    let (method, uri, headers) = (parts.method, parts.uri, parts.headers);
    let raw = uri.query().map(String::from);
    let path = uri.path().to_string();
    let ((result, warnings), facts) = crate::audit::scope(crate::podsecurity::scope(dispatch(
        &s,
        &method,
        &path,
        raw.as_deref(),
        &headers,
        body,
        upgrade,
        cert_user,
    )))
    .await;
    let (mut resp, failure) = match result {
        Ok(resp) => (resp, None),
        Err(e) => {
            let status = e.status().clone();
            (e.into_response(), Some(status))
        }
    };
    for w in warnings {
        if let Ok(v) = axum::http::HeaderValue::from_str(&crate::podsecurity::header_value(&w)) {
            resp.headers_mut().append("warning", v);
        }
    }
    let seen = || crate::audit::Seen {
        uri: uri.to_string(),
        user_agent: headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        source_ip,
        received_nanos: received,
    };
    let code = resp.status().as_u16();
    if let Some(pending) = crate::audit::pending(&s.audit, facts, seen, code, failure.as_ref()) {
        // Written once the body has been sent or dropped: a watch's event when it ends.
        resp = resp.map(|body| {
            Body::new(http_body_util::BodyExt::map_frame(body, move |frame| {
                pending.hold();
                frame
            }))
        });
    }
    tracing::debug!(method = %method, path = %path, status = resp.status().as_u16(), elapsed_us = started.elapsed().as_micros() as u64, "request");
    resp
}

/// The whole request body: 413 past the size limit, 408 when it has not all come within the
/// body timeout (a client trickling it holds nothing longer).
async fn read_body(s: &ApiServer, body: Body) -> ApiResult<bytes::Bytes> {
    let limit = s.config.body_timeout;
    let body = tokio::time::timeout(limit, axum::body::to_bytes(body, s.config.max_body_bytes))
        .await
        .map_err(|_| {
            ApiError::new(
                408,
                "Timeout",
                format!("the request body did not arrive within {limit:?}"),
            )
        })?
        .map_err(|_| {
            ApiError::new(
                413,
                "RequestEntityTooLarge",
                format!(
                    "the request body is larger than the limit of {} bytes",
                    s.config.max_body_bytes
                ),
            )
        })?;
    crate::audit::note_body(&body);
    Ok(body)
}

async fn dispatch(
    s: &ApiServer,
    method: &Method,
    path: &str,
    raw: Option<&str>,
    headers: &HeaderMap,
    body: Body,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    cert_user: Option<(String, Vec<String>)>,
) -> ApiResult<Response> {
    let r = route(path)?;
    match r {
        Route::Health => {
            let ok = s.is_ready() || path.starts_with("/livez") || path.starts_with("/healthz");
            return Ok(if ok {
                (StatusCode::OK, "ok").into_response()
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
            });
        }
        Route::Version => {
            return Ok(json_response(
                StatusCode::OK,
                &discovery::version(&s.config.version),
            ));
        }
        _ => {}
    }
    let q = parse_query(raw);
    let request = crate::authz::attributes(method, &r, path, &q);
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    crate::audit::note_request(&r, path, request.as_ref(), content_type);
    // As kube-apiserver: a client certificate of the cluster CA (its CN the user, its Os the
    // groups), else a bearer token (the token file, then bootstrap tokens, then user tokens).
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    let user = cert_user
        .map(|(name, groups)| UserInfo {
            name,
            uid: String::new(),
            groups,
        })
        .or_else(|| sa_token(s, auth))
        .or_else(|| s.auth.authenticate(auth))
        .or_else(|| crate::auth::bootstrap_token(&s.registry, auth))
        .or_else(|| crate::auth::user_token(&s.registry, auth));
    let Some(mut user) = user else {
        return Err(ApiError::new(
            401,
            "Unauthorized",
            "Unauthorized: a valid bearer token is required (see the kubeconfig that `berth up` wrote)",
        ));
    };
    // Every authenticated caller is in this group, as in Kubernetes (the discovery roles are
    // bound to it).
    if !user.groups.iter().any(|g| g == "system:authenticated") {
        user.groups.push("system:authenticated".into());
    }
    crate::audit::note_user(&user);
    if let Some(request) = &request {
        match s.authz.check(&user, request) {
            Ok(allowed) => crate::audit::note_decision(crate::audit::Decision::Allow(allowed)),
            Err(e) => {
                crate::audit::note_decision(crate::audit::Decision::Forbid);
                return Err(e);
            }
        }
    }
    let requester = user.clone();
    crate::authz::as_requester(requester, s.authz.clone(), async {
        serve(s, method, r, path, raw, &q, headers, body, upgrade, &user).await
    })
    .await
}

/// The ServiceAccount a bearer token of the JSON Web Token shape authenticates, if it does.
fn sa_token(s: &ApiServer, header: Option<&str>) -> Option<UserInfo> {
    let token = header?.strip_prefix("Bearer ")?.trim();
    if !crate::satoken::looks_like_jwt(token) {
        return None;
    }
    let now = berth_api::timefmt::now_nanos() / 1_000_000_000;
    s.config
        .sa_signer
        .as_ref()?
        .authenticate(&s.registry, token, now)
}

/// Issues a ServiceAccount token (`serviceaccounts/NAME/token`, a TokenRequest).
fn token_request(
    s: &ApiServer,
    kind: &'static ResourceKind,
    ns: &str,
    name: &str,
    body: &[u8],
    headers: &HeaderMap,
) -> ApiResult<Response> {
    use crate::satoken::{DEFAULT_SECONDS, ISSUER, MAX_SECONDS, MIN_SECONDS};
    let Some(signer) = s.config.sa_signer.as_ref() else {
        return Err(ApiError::new(
            404,
            "NotFound",
            "this server issues no ServiceAccount tokens (it serves without TLS)",
        ));
    };
    let sa = s.registry.get(kind, Some(ns), name)?;
    let request = if body.is_empty() {
        serde_json::json!({})
    } else {
        parse_body(headers, body)?.into_value()
    };
    let spec = &request["spec"];
    let audiences: Vec<String> = match spec["audiences"].as_array() {
        Some(a) if !a.is_empty() => a
            .iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect(),
        _ => vec![ISSUER.to_string()],
    };
    let seconds = match spec["expirationSeconds"].as_u64() {
        None => DEFAULT_SECONDS,
        Some(n) if n < MIN_SECONDS => {
            return Err(ApiError::bad_request(format!(
                "spec.expirationSeconds: Invalid value: {n}: may not specify a duration less than {MIN_SECONDS} seconds"
            )));
        }
        Some(n) => n.min(MAX_SECONDS),
    };
    let now = berth_api::timefmt::now_nanos() / 1_000_000_000;
    let token = signer
        .issue(ns, name, sa.uid(), &audiences, now, seconds)
        .map_err(ApiError::internal)?;
    let expires = berth_api::timefmt::rfc3339_from_nanos((now + seconds) * 1_000_000_000);
    Ok(json_response(
        StatusCode::CREATED,
        &serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"audiences": audiences, "expirationSeconds": seconds},
            "status": {"token": token, "expirationTimestamp": expires},
        }),
    ))
}

/// Answers an authenticated and authorized request.
#[allow(clippy::too_many_arguments)]
async fn serve(
    s: &ApiServer,
    method: &Method,
    r: Route,
    path: &str,
    raw: Option<&str>,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    user: &UserInfo,
) -> ApiResult<Response> {
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v));
    match (method, r) {
        (&Method::GET, Route::Api) => ok(discovery::api_versions()),
        (&Method::GET, Route::Apis) => ok(discovery::api_group_list()),
        (&Method::GET, Route::Group(g)) => {
            discovery::api_group(&g).map_or_else(|| Err(not_found(path)), ok)
        }
        (&Method::GET, Route::Resources { group, version }) => {
            discovery::resource_list(&group, &version).map_or_else(|| Err(not_found(path)), ok)
        }
        // berth publishes no schemas yet (it validates on the server): the document is an
        // empty OpenAPI v2 `Document`, which is zero bytes in the protobuf encoding kubectl
        // asks for, and `{"swagger": "2.0", ...}` in JSON. kubectl then skips client-side
        // checks for kinds it has no schema for and the server's validation answers.
        (&Method::GET, Route::OpenApiV2) => {
            let accept = headers
                .get("accept")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if accept.contains("protobuf") {
                return Ok((
                    StatusCode::OK,
                    [("content-type", "application/octet-stream")],
                    Vec::<u8>::new(),
                )
                    .into_response());
            }
            ok(
                serde_json::json!({"swagger": "2.0", "info": {"title": "berth", "version": s.config.version}, "paths": {}, "definitions": {}}),
            )
        }
        (&Method::GET, Route::History) => ok(history::history(&s.registry, q)?),
        (&Method::GET, Route::Revisions) => ok(history::revisions(&s.registry, q)?),
        (&Method::GET, Route::Export) => {
            // Secrets go into an export only for a requester who may read them.
            let may_get = |ns: &str, name: &str| {
                let get = berth_api::rbac::Request::resource("get", "", "secrets", "", ns, name);
                s.authz.allows(user, &get).is_some()
            };
            ok(history::export(&s.registry, q, &may_get)?)
        }
        (&Method::GET, Route::Audit) => {
            let limit = query_int(q, "limit", 1, 10_000)?.unwrap_or(100) as usize;
            let items = s.audit.recent(truthy(q, "denied"), limit).await?;
            ok(
                serde_json::json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": items}),
            )
        }
        (&Method::GET, Route::Metrics { resource, ns, name }) => {
            ok(crate::proxy::metrics(s, &resource, ns.as_deref(), name.as_deref(), q).await?)
        }
        (
            &Method::GET,
            Route::Object {
                kind,
                ns: Some(ns),
                name,
                sub: Some(sub),
            },
        ) if kind.kind == "Pod" && sub == "log" => crate::proxy::logs(s, &ns, &name, q).await,
        (
            &Method::GET | &Method::POST,
            Route::Object {
                kind,
                ns: Some(ns),
                name,
                sub: Some(sub),
            },
        ) if kind.kind == "Pod" && sub == "exec" => {
            crate::proxy::exec(s, &ns, &name, raw, headers, upgrade).await
        }
        (&Method::GET, Route::NodeProxy { node, path }) => {
            crate::proxy::node_get(s, &node, &path).await
        }
        (m, Route::Kv(key)) => {
            let body = read_body(s, body).await?;
            crate::kv::handle(
                &s.registry.store,
                m,
                &key,
                q,
                body,
                &user.name,
                s.stopping(),
            )
            .await
        }
        (m, Route::Collection { kind, ns }) if kind.is_review() => {
            let body = read_body(s, body).await?;
            crate::reviews::answer(s, m, kind, ns.as_deref(), &body, user)
        }
        (m, Route::Collection { kind, ns }) => {
            collection(s, m, kind, ns, q, headers, body, user).await
        }
        (
            m,
            Route::Object {
                kind,
                ns,
                name,
                sub,
            },
        ) => object(s, m, kind, ns, name, sub, q, headers, body, user).await,
        (m, _) => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{m} is not supported on {path}"),
        )),
    }
}

async fn collection(
    s: &ApiServer,
    m: &Method,
    kind: &'static ResourceKind,
    ns: Option<String>,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
    user: &UserInfo,
) -> ApiResult<Response> {
    let dry_run = q.get("dryRun").is_some_and(|d| d == "All");
    match *m {
        Method::GET if truthy(q, "watch") => watch(s, kind, ns, q),
        Method::GET => {
            let opts = list_options(kind, q)?;
            let r = s.registry.list(kind, ns.as_deref(), &opts)?;
            if wants_table(headers) {
                let t = table_of(
                    kind,
                    &r.items,
                    &r.revision.to_string(),
                    r.continue_token.as_deref(),
                    q,
                );
                return Ok(json_response(StatusCode::OK, &t));
            }
            Ok(json_response(StatusCode::OK, &list_body(kind, r)))
        }
        Method::POST => {
            let body = read_body(s, body).await?;
            let obj = parse_body(headers, &body)?;
            let created = s
                .registry
                .create(kind, ns.as_deref(), obj, &user.name, dry_run)
                .await?;
            Ok(json_response(StatusCode::CREATED, &created.into_value()))
        }
        Method::DELETE => {
            let body = read_body(s, body).await?;
            let dopts = delete_options(q, &body)?;
            let opts = list_options(kind, q)?;
            let list = s.registry.list(kind, ns.as_deref(), &opts)?;
            let mut deleted = Vec::new();
            for o in list.items {
                match s
                    .registry
                    .delete(kind, o.namespace(), o.name(), &dopts, &user.name)
                    .await
                {
                    Ok(d) => deleted.push(d),
                    Err(e) if e.code() == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            let r = crate::registry::ListResult {
                items: deleted,
                revision: s.registry.store.current_revision(),
                continue_token: None,
            };
            Ok(json_response(StatusCode::OK, &list_body(kind, r)))
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{m} is not supported on a collection"),
        )),
    }
}

fn watch(
    s: &ApiServer,
    kind: &'static ResourceKind,
    ns: Option<String>,
    q: &HashMap<String, String>,
) -> ApiResult<Response> {
    let opts = list_options(kind, q)?;
    let timeout = timeout_seconds(q)?;
    crate::watch::start(
        s.registry.clone(),
        crate::watch::WatchParams {
            kind,
            ns,
            opts,
            resource_version: q.get("resourceVersion").cloned(),
            bookmarks: truthy(q, "allowWatchBookmarks"),
            bookmark_interval: s.config.bookmark_interval,
            timeout,
            cache: s.watch_cache.clone(),
            stopping: s.stopping(),
        },
    )
}

async fn object(
    s: &ApiServer,
    m: &Method,
    kind: &'static ResourceKind,
    ns: Option<String>,
    name: String,
    sub: Option<String>,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
    user: &UserInfo,
) -> ApiResult<Response> {
    let dry_run = q.get("dryRun").is_some_and(|d| d == "All");
    if sub.as_deref() == Some("scale") && kind.has_scale() {
        return scale(s, m, kind, ns.as_deref(), &name, q, headers, body, user).await;
    }
    if sub.as_deref() == Some("binding") && kind.kind == "Pod" && *m == Method::POST {
        let body = read_body(s, body).await?;
        let binding = parse_body(headers, &body)?;
        let node = binding
            .get("target")
            .and_then(|t| t.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if node.is_empty() {
            return Err(ApiError::invalid(
                kind,
                &name,
                &[berth_api::FieldError::required("target.name")],
            ));
        }
        s.registry
            .bind(
                ns.as_deref().unwrap_or("default"),
                &name,
                node,
                &user.name,
                dry_run,
            )
            .await?;
        return Ok(json_response(
            StatusCode::CREATED,
            &serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        ));
    }
    if sub.as_deref() == Some("token") && kind.kind == "ServiceAccount" && *m == Method::POST {
        let body = read_body(s, body).await?;
        return token_request(
            s,
            kind,
            ns.as_deref().unwrap_or("default"),
            &name,
            &body,
            headers,
        );
    }
    if sub.as_deref() == Some("approval")
        && kind.kind == "CertificateSigningRequest"
        && *m == Method::PUT
    {
        let body = read_body(s, body).await?;
        let asked = parse_body(headers, &body)?;
        let out = s
            .registry
            .approve_csr(kind, &name, &asked, &user.name)
            .await?;
        return Ok(json_response(StatusCode::OK, &out.as_value()));
    }
    let status = match sub.as_deref() {
        None => false,
        Some("status") if kind.has_status => true,
        Some(other) => {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!(
                    "{} has no {other:?} subresource in this version of berth",
                    kind.qualified_plural()
                ),
            ));
        }
    };
    let ns = ns.as_deref();
    match *m {
        Method::GET if truthy(q, "watch") => {
            let mut q = q.clone();
            q.insert("fieldSelector".into(), format!("metadata.name={name}"));
            watch(s, kind, ns.map(str::to_string), &q)
        }
        Method::GET if !status && wants_table(headers) => {
            let o = s.registry.get(kind, ns, &name)?;
            let rv = o.resource_version().to_string();
            Ok(json_response(
                StatusCode::OK,
                &table_of(kind, &[o], &rv, None, q),
            ))
        }
        Method::GET => Ok(json_response(
            StatusCode::OK,
            &s.registry.get(kind, ns, &name)?.into_value(),
        )),
        Method::PUT => {
            let body = read_body(s, body).await?;
            let obj = parse_body(headers, &body)?;
            let out = if status {
                s.registry
                    .update_status(kind, ns, &name, obj, &user.name, dry_run)
                    .await?
            } else {
                s.registry
                    .update(kind, ns, &name, obj, &user.name, "update", dry_run)
                    .await?
            };
            Ok(json_response(StatusCode::OK, &out.into_value()))
        }
        Method::PATCH => {
            let ct = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let pt = PatchType::from_content_type(ct)?;
            let body = read_body(s, body).await?;
            let out = s
                .registry
                .patch(kind, ns, &name, pt, &body, &user.name, status, dry_run)
                .await?;
            Ok(json_response(StatusCode::OK, &out.into_value()))
        }
        Method::DELETE if !status => {
            let body = read_body(s, body).await?;
            let opts = delete_options(q, &body)?;
            let out = s
                .registry
                .delete(kind, ns, &name, &opts, &user.name)
                .await?;
            // Held by finalizers (or a namespace being emptied): 202. A pod given its grace
            // period answers 200 with the marked pod, as Kubernetes does.
            let code = if out.deletion_timestamp().is_some()
                && !opts.dry_run
                && kind.kind != "Pod"
                && s.registry.get(kind, ns, &name).is_ok()
            {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            };
            Ok(json_response(code, &out.into_value()))
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{m} is not supported here"),
        )),
    }
}

async fn scale(
    s: &ApiServer,
    m: &Method,
    kind: &'static ResourceKind,
    ns: Option<&str>,
    name: &str,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
    user: &UserInfo,
) -> ApiResult<Response> {
    let dry_run = q.get("dryRun").is_some_and(|d| d == "All");
    let out = match *m {
        Method::GET => s.registry.get_scale(kind, ns, name)?,
        Method::PUT => {
            let body = read_body(s, body).await?;
            let obj = parse_body(headers, &body)?;
            s.registry
                .update_scale(kind, ns, name, obj, &user.name, dry_run)
                .await?
        }
        Method::PATCH => {
            let ct = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let pt = PatchType::from_content_type(ct)?;
            let body = read_body(s, body).await?;
            let current = s.registry.get_scale(kind, ns, name)?;
            let patched = crate::patch::apply(kind, &current, pt, &body)?;
            let obj = Object::from_value(patched).ok_or_else(|| {
                ApiError::bad_request("the patch made the Scale something other than an object")
            })?;
            s.registry
                .update_scale(kind, ns, name, obj, &user.name, dry_run)
                .await?
        }
        _ => {
            return Err(ApiError::new(
                405,
                "MethodNotAllowed",
                format!("{m} is not supported on scale"),
            ));
        }
    };
    Ok(json_response(StatusCode::OK, &out.into_value()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_kubernetes_paths() {
        let k = |r: Route| match r {
            Route::Collection { kind, ns } => format!("C {} {:?}", kind.kind, ns),
            Route::Object {
                kind,
                ns,
                name,
                sub,
            } => format!("O {} {:?} {name} {:?}", kind.kind, ns, sub),
            other => format!("{other:?}"),
        };
        assert_eq!(
            k(route("/api/v1/namespaces/default/pods").unwrap()),
            "C Pod Some(\"default\")"
        );
        assert_eq!(k(route("/api/v1/pods").unwrap()), "C Pod None");
        assert_eq!(
            k(route("/api/v1/namespaces/default/pods/web/status").unwrap()),
            "O Pod Some(\"default\") web Some(\"status\")"
        );
        assert_eq!(
            k(route("/api/v1/namespaces/kube-system").unwrap()),
            "O Namespace None kube-system None"
        );
        assert_eq!(
            k(route("/api/v1/namespaces/x/status").unwrap()),
            "O Namespace None x Some(\"status\")"
        );
        assert_eq!(k(route("/api/v1/namespaces").unwrap()), "C Namespace None");
        assert_eq!(
            k(route("/apis/apps/v1/namespaces/a/deployments/web").unwrap()),
            "O Deployment Some(\"a\") web None"
        );
        assert_eq!(
            k(route("/apis/coordination.k8s.io/v1/namespaces/a/leases").unwrap()),
            "C Lease Some(\"a\")"
        );
        assert_eq!(k(route("/api/v1/nodes/n1").unwrap()), "O Node None n1 None");
        assert!(route("/api/v1/widgets").is_err());
        assert!(route("/apis/apps/v2/deployments").is_err());
        assert!(
            route("/api/v1/pods/x").is_err(),
            "namespaced kinds need a namespace for one object"
        );
        assert_eq!(route("/apis/berth.dev/v1/history").unwrap(), Route::History);
        assert_eq!(route("/openapi/v2").unwrap(), Route::OpenApiV2);
        assert_eq!(route("/apis/berth.dev/v1/audit").unwrap(), Route::Audit);
    }

    #[test]
    fn decodes_queries() {
        let q = parse_query(Some("labelSelector=app%3Dweb%2Cenv+in+(a)&watch=1"));
        assert_eq!(q["labelSelector"], "app=web,env in (a)");
        assert!(truthy(&q, "watch"));
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
