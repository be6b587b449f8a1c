//! Manifest files: multi-document YAML or JSON, with errors that name the document, line and
//! column.

use std::fmt;

use serde_json::Value;

use crate::object::Object;

/// One object read from a manifest, with where it came from.
#[derive(Debug, Clone)]
pub struct ManifestDoc {
    /// 1-based document number within the file.
    pub doc: usize,
    /// 1-based line where the document starts.
    pub line: usize,
    pub object: Object,
}

/// Where and why a manifest could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    pub source: String,
    pub doc: usize,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.source, self.doc)?;
        if self.line > 0 {
            write!(f, ", line {}, column {}", self.line, self.column)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ManifestError {}

/// Splits YAML text into documents at `---` lines, keeping each one's first line number.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let is_marker = line == "---"
            || line.starts_with("--- ")
            || line.starts_with("---\t")
            || line == "..."
            || line.starts_with("... ");
        if is_marker {
            docs.push((start, std::mem::take(&mut cur)));
            // "--- {a: 1}" keeps the content after the marker on the same line.
            let rest = line.get(4..).unwrap_or("");
            if line.starts_with("---") && !rest.trim().is_empty() {
                cur.push_str(rest);
                cur.push('\n');
                start = i + 1;
            } else {
                start = i + 2;
            }
            continue;
        }
        if line.starts_with('%') && cur.trim().is_empty() {
            // A directive (%YAML 1.2) belongs to the next document; it carries nothing here.
            start = i + 2;
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
    }
    docs.push((start, cur));
    docs.retain(|(_, d)| {
        d.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    docs
}

fn check_object(
    source: &str,
    doc: usize,
    line: usize,
    v: Value,
) -> Result<Vec<ManifestDoc>, ManifestError> {
    let err = |message: String| ManifestError {
        source: source.into(),
        doc,
        line,
        column: 1,
        message,
    };
    let Value::Object(map) = v else {
        return Err(err(
            "a manifest document must be a mapping with apiVersion, kind and metadata".into(),
        ));
    };
    let obj = Object(map);
    if obj.kind() == "List" || obj.kind().ends_with("List") && obj.get("items").is_some() {
        let items = obj
            .get("items")
            .and_then(Value::as_array)
            .ok_or_else(|| err("a List must have an items array".into()))?;
        let mut out = Vec::new();
        for item in items {
            out.extend(check_object(source, doc, line, item.clone())?);
        }
        return Ok(out);
    }
    for field in ["apiVersion", "kind"] {
        match obj.get(field) {
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(_) => return Err(err(format!("{field} must be a non-empty string"))),
            None => {
                return Err(err(format!(
                    "{field} is required; every document needs apiVersion and kind (e.g. apiVersion: apps/v1, kind: Deployment)"
                )));
            }
        }
    }
    Ok(vec![ManifestDoc {
        doc,
        line,
        object: obj,
    }])
}

/// Parses a manifest: one JSON value (an object or a `List`), or a stream of YAML documents.
/// `source` names the file in errors.
pub fn parse(source: &str, text: &str) -> Result<Vec<ManifestDoc>, ManifestError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let v: Value = serde_json::from_str(text).map_err(|e| ManifestError {
            source: source.into(),
            doc: 1,
            line: e.line(),
            column: e.column(),
            message: e
                .to_string()
                .split(" at line")
                .next()
                .unwrap_or_default()
                .to_string(),
        })?;
        let values = match v {
            Value::Array(a) => a,
            other => vec![other],
        };
        let mut out = Vec::new();
        for (i, v) in values.into_iter().enumerate() {
            out.extend(check_object(source, i + 1, 1, v)?);
        }
        return Ok(out);
    }
    let mut out = Vec::new();
    for (i, (start, doc)) in split_documents(text).into_iter().enumerate() {
        let v: Value = serde_saphyr::from_str(&doc).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line() as usize + start - 1, l.column() as usize))
                .unwrap_or((start, 1));
            let message = e.to_string();
            // The library's message repeats the location; keep the reason only.
            let message = message.lines().next().unwrap_or_default().to_string();
            ManifestError {
                source: source.into(),
                doc: i + 1,
                line,
                column,
                message,
            }
        })?;
        if v.is_null() {
            continue;
        }
        out.extend(check_object(source, i + 1, start, v)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml() {
        let text = "# two things\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\ndata:\n  k: \"v\"\n";
        let docs = parse("x.yaml", text).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].object.name(), "b");
        assert_eq!(docs[1].doc, 2);
        assert_eq!(docs[1].line, 7);
    }

    #[test]
    fn errors_name_document_line_and_column() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [b\n";
        let e = parse("x.yaml", text).unwrap_err();
        assert_eq!(e.doc, 2);
        assert!(e.line >= 9, "{e}");
        assert!(e.to_string().starts_with("x.yaml: document 2, line"), "{e}");
        let e = parse("y.json", "{\"apiVersion\": \"v1\",\n \"kind\": }").unwrap_err();
        assert_eq!((e.line, e.doc), (2, 1), "{e}");
        let e = parse("z.yaml", "kind: Pod\n").unwrap_err();
        assert!(e.message.contains("apiVersion"), "{e}");
    }

    #[test]
    fn lists_expand() {
        let docs = parse("l.json", r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}}]}"#).unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].object.kind(), "Namespace");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn never_panics(s in "\\PC{0,200}") {
            let _ = parse("fuzz", &s);
        }

        #[test]
        fn never_panics_on_yaml_like(s in "(apiVersion: v1\n|kind: Pod\n|metadata:\n|  name: [a-z{}\\[\\]:,\"'&*!|>-]{0,8}\n|---\n|- x\n|  - y: z\n|\t|#c\n){0,12}") {
            let _ = parse("fuzz", &s);
        }
    }
}
