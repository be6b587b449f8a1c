//! Image references as Docker writes them: `[registry/]repository[:tag][@digest]`.

use std::fmt;

use crate::digest::Digest;

/// The registry a reference without one means.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `docker.io`, `localhost:5000`, `registry.example.com`.
    pub registry: String,
    /// `library/busybox`, `team/app`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {reference:?}: {why}")]
pub struct ReferenceError {
    pub reference: String,
    pub why: String,
}

fn is_path_component(s: &str) -> bool {
    // lowercase alphanumerics separated by '.', '_', '__' or runs of '-'
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn is_tag(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !s.starts_with(['.', '-'])
}

impl Reference {
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        let err = |why: &str| ReferenceError {
            reference: input.to_string(),
            why: why.to_string(),
        };
        if input.is_empty() || input.len() > 512 {
            return Err(err("must be between 1 and 512 characters"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => (r, Some(Digest::parse(d).map_err(|e| err(&e.to_string()))?)),
            None => (input, None),
        };
        // A registry is the first component if it has a '.' or ':' or is "localhost".
        let (registry, path) = match rest.split_once('/') {
            Some((first, tail))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), tail)
            }
            _ => (DEFAULT_REGISTRY.to_string(), rest),
        };
        let (repo, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, Some(t.to_string())),
            _ => (path, None),
        };
        if let Some(t) = &tag
            && !is_tag(t)
        {
            return Err(err(
                "a tag is at most 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
            ));
        }
        if repo.is_empty() || !repo.split('/').all(is_path_component) {
            return Err(err(
                "the repository name must be lowercase letters, digits and separators ('.', '_', '-', '/')",
            ));
        }
        if registry.is_empty() || registry.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(err("bad registry host"));
        }
        let repository = if registry == DEFAULT_REGISTRY && !repo.contains('/') {
            format!("library/{repo}")
        } else {
            repo.to_string()
        };
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The short form users write: `busybox:1.36` for `docker.io/library/busybox:1.36`.
    pub fn familiar(&self) -> String {
        let repo = if self.registry == DEFAULT_REGISTRY {
            self.repository
                .strip_prefix("library/")
                .unwrap_or(&self.repository)
                .to_string()
        } else {
            format!("{}/{}", self.registry, self.repository)
        };
        let mut s = repo;
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d.as_str());
        }
        s
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_references() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.familiar(), "busybox:latest");
        let r = Reference::parse("localhost:5000/team/app:v1.2").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("localhost:5000", "team/app", Some("v1.2"))
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("127.0.0.1:5000/x@{d}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.unwrap().as_str(), d);
        assert_eq!(
            Reference::parse("org/app").unwrap().to_string(),
            "docker.io/org/app:latest"
        );
    }

    #[test]
    fn refuses_bad_references() {
        for bad in [
            "",
            "UPPER",
            "a:b:c",
            "app:",
            "app@sha256:123",
            "a//b",
            "-a",
            "app:.bad",
            "app with space",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            if let Ok(r) = Reference::parse(&s) {
                // What parses prints back to something that parses to the same.
                proptest::prop_assert_eq!(Reference::parse(&r.to_string()).unwrap(), r);
            }
        }
    }
}
