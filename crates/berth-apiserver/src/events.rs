//! Event recording: how anything inside the server (admission, the in-process controllers)
//! reports an Event about an object. An Event is written through the registry like any other
//! object, best effort: a failure to record one is logged and never fails what it reports on.

use berth_api::object::Object;

use crate::registry::Registry;

/// Who reports an Event: the component it names (`source.component`, `reportingComponent`:
/// kubectl's "From" column) and the user it is written as (history shows it as the writer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reporter {
    pub component: &'static str,
    pub user: &'static str,
}

/// Pod Security admission, inside the server.
pub const POD_SECURITY: Reporter = Reporter {
    component: "pod-security-admission",
    user: "system:apiserver",
};

/// Records an Event about `about`, reported by `by`.
pub async fn record(
    registry: &Registry,
    by: Reporter,
    about: &Object,
    typ: &str,
    reason: &str,
    message: &str,
) {
    let Some(kind) = berth_api::kinds::resolve("events") else {
        return;
    };
    let Some(obj) = object(about, by.component, typ, reason, message) else {
        return;
    };
    if let Err(e) = registry
        .create(
            kind,
            obj.namespace().map(String::from).as_deref(),
            obj,
            by.user,
            false,
        )
        .await
    {
        tracing::debug!(error = %e.0.message, "cannot record an event");
    }
}

/// An Event about `about`, reported by `component`, for callers that write it themselves (the
/// scheduler puts its Scheduled Events in the bindings' transaction).
pub fn object(
    about: &Object,
    component: &str,
    typ: &str,
    reason: &str,
    message: &str,
) -> Option<Object> {
    let nanos = berth_api::timefmt::now_nanos();
    Object::from_value(berth_api::object::event(
        &about.0, component, typ, reason, message, nanos,
    ))
}
