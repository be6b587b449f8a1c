//! The process's metrics, in Prometheus' text exposition format: counters and gauges by name
//! and labels, kept in one process-wide table. Each subsystem writes its own series (config
//! generation's today); the node agent's API and `berth gen --metrics-listen` serve
//! [`render`].
//!
//! API boundary: [`inc`], [`set`], [`forget`] and [`render`]; no IO, no async runtime (the CI
//! purity check holds it so).
//!
//! Invariant: a series exists only once something set or incremented it, and goes when its
//! object goes ([`forget`]).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

type Series = BTreeMap<(&'static str, String), f64>;

static SERIES: Mutex<Series> = Mutex::new(BTreeMap::new());
static HELP: Mutex<BTreeMap<&'static str, (&'static str, &'static str)>> =
    Mutex::new(BTreeMap::new());

fn labels(pairs: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let v = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(s, "{k}=\"{v}\"");
    }
    s
}

fn with(name: &'static str, typ: &'static str, help: &'static str, f: impl FnOnce(&mut Series)) {
    HELP.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name, (typ, help));
    f(&mut SERIES.lock().unwrap_or_else(|e| e.into_inner()));
}

/// Adds one to a counter.
pub fn inc(name: &'static str, help: &'static str, pairs: &[(&str, &str)]) {
    with(name, "counter", help, |s| {
        *s.entry((name, labels(pairs))).or_default() += 1.0;
    });
}

/// Sets a gauge.
pub fn set(name: &'static str, help: &'static str, pairs: &[(&str, &str)], value: f64) {
    with(name, "gauge", help, |s| {
        s.insert((name, labels(pairs)), value);
    });
}

/// Removes every series of `name` whose labels include `pair` (an object that went away).
pub fn forget(name: &'static str, pair: (&str, &str)) {
    let needle = labels(&[pair]);
    SERIES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(n, l), _| *n != name || !l.split(',').any(|p| p == needle));
}

/// Everything, as `/metrics` serves it.
pub fn render() -> String {
    let help = HELP.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let series = SERIES.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = String::new();
    let mut last = "";
    for ((name, l), v) in series.iter() {
        if *name != last {
            if let Some((typ, h)) = help.get(name) {
                let _ = writeln!(out, "# HELP {name} {h}\n# TYPE {name} {typ}");
            }
            last = name;
        }
        if l.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{l}}} {v}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gauges_and_forgetting() {
        inc("t_total", "a test counter", &[("name", "a\"b")]);
        inc("t_total", "a test counter", &[("name", "a\"b")]);
        set("t_gauge", "a test gauge", &[("name", "x")], 2.5);
        let text = render();
        assert!(text.contains("# TYPE t_total counter"), "{text}");
        assert!(text.contains("t_total{name=\"a\\\"b\"} 2"), "{text}");
        assert!(text.contains("t_gauge{name=\"x\"} 2.5"), "{text}");
        forget("t_gauge", ("name", "x"));
        assert!(!render().contains("t_gauge{"));
    }
}
