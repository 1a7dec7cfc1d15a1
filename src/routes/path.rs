//! Route paths: `/literal/{name}` patterns, the shape axum routes them by, and the
//! paths Hopper keeps for its own API. Everything axum or its matcher would panic on
//! is refused here, at start.

use super::template::is_name;

/// Paths of Hopper's own API: a route at or under one of them is refused, so the
/// config file can never shadow or break the API.
pub const RESERVED: [&str; 12] = [
    "/api/v1/queues",
    "/api/v1/streams",
    "/api/v1/stream",
    "/api/v1/tasks",
    "/api/v1/admin",
    "/api/v1/ping",
    "/api/v1/auth",
    "/health",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/ui",
];

/// One `/`-separated part of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Matched as written.
    Literal(String),
    /// `{name}`: any one segment, captured.
    Param(String),
}

/// A validated route path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    segments: Vec<Segment>,
}

impl PathPattern {
    /// Parses `/a/{b}/c`; an error says what is wrong.
    pub fn parse(raw: &str) -> Result<PathPattern, String> {
        let Some(rest) = raw.strip_prefix('/') else {
            return Err(format!("path {raw:?} must start with /"));
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (index, part) in parts.iter().enumerate() {
            // Empty only at the end: "/" itself, or a trailing slash (a distinct path).
            if part.is_empty() && index + 1 < parts.len() {
                return Err(format!("path {raw:?} has an empty segment (//)"));
            }
            segments.push(segment(raw, part)?);
        }
        let mut seen: Vec<&str> = Vec::new();
        for segment in &segments {
            if let Segment::Param(name) = segment {
                if seen.contains(&name.as_str()) {
                    return Err(format!("path {raw:?} names parameter {{{name}}} twice"));
                }
                seen.push(name);
            }
        }
        Ok(PathPattern { segments })
    }

    /// The parameter names, in path order.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(name) => Some(name.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// The path axum routes on: each parameter named by its position, so routes that
    /// differ only in parameter names share one entry (the matcher refuses two).
    pub fn shape(&self) -> String {
        let mut shape = String::new();
        for (index, segment) in self.segments.iter().enumerate() {
            shape.push('/');
            match segment {
                Segment::Literal(text) => shape.push_str(text),
                Segment::Param(_) => shape.push_str(&format!("{{{}}}", shape_param(index))),
            }
        }
        shape
    }

    /// `(name in the shape, name in this route)` of each parameter.
    pub fn param_names(&self) -> Vec<(String, String)> {
        self.segments
            .iter()
            .enumerate()
            .filter_map(|(index, segment)| match segment {
                Segment::Param(name) => Some((shape_param(index), name.clone())),
                Segment::Literal(_) => None,
            })
            .collect()
    }

    /// The reserved path this one lies at or under, if any. Only literal segments
    /// count: where a route has a parameter, the API's literal paths still win.
    pub fn reserved_prefix(&self) -> Option<&'static str> {
        RESERVED.into_iter().find(|reserved| {
            let wanted: Vec<&str> = reserved[1..].split('/').collect();
            wanted.len() <= self.segments.len()
                && wanted
                    .iter()
                    .zip(&self.segments)
                    .all(|(want, have)| matches!(have, Segment::Literal(text) if text == want))
        })
    }
}

fn shape_param(index: usize) -> String {
    format!("p{index}")
}

fn segment(raw: &str, part: &str) -> Result<Segment, String> {
    if let Some(inner) = part.strip_prefix('{') {
        let Some(name) = inner.strip_suffix('}') else {
            return Err(format!(
                "path {raw:?}: a parameter is a whole segment {{name}}"
            ));
        };
        if let Some(wildcard) = name.strip_prefix('*') {
            return Err(format!(
                "path {raw:?}: wildcard parameters ({{*{wildcard}}}) are not supported"
            ));
        }
        if !is_name(name) {
            return Err(format!(
                "path {raw:?}: parameter {{{name}}} needs a name of letters, digits and _"
            ));
        }
        return Ok(Segment::Param(name.to_owned()));
    }
    if part.contains(['{', '}']) {
        return Err(format!(
            "path {raw:?}: a parameter is a whole segment {{name}}"
        ));
    }
    // axum refuses segments starting with these (the syntax of its older versions).
    if part.starts_with([':', '*']) {
        return Err(format!(
            "path {raw:?}: a segment must not start with : or *; parameters are {{name}}"
        ));
    }
    if let Some(bad) = part.chars().find(|c| !is_path_char(*c)) {
        return Err(format!(
            "path {raw:?}: {bad:?} is not allowed; use letters, digits and -._~!$&'()+,;=:@"
        ));
    }
    Ok(Segment::Literal(part.to_owned()))
}

/// RFC 3986 path characters, without `%`: literals are matched against the raw
/// (encoded) request path, where an escape would surprise more than help.
fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()+,;=:@".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_name_parameters_by_position() {
        let path = PathPattern::parse("/groups/{group}/members/{member}").unwrap();
        assert_eq!(path.shape(), "/groups/{p1}/members/{p3}");
        assert_eq!(path.params().collect::<Vec<_>>(), ["group", "member"]);
        assert_eq!(
            PathPattern::parse("/groups/{id}/members/{m}")
                .unwrap()
                .shape(),
            path.shape()
        );
        assert_eq!(PathPattern::parse("/").unwrap().shape(), "/");
        assert_eq!(
            PathPattern::parse("/clients/").unwrap().shape(),
            "/clients/"
        );
    }

    #[test]
    fn bad_paths_are_refused() {
        for bad in [
            "", "x", "/a//b", "/{a}/{a}", "/{*rest}", "/a{b}", "/{a", "/{1}", "/:id", "/*x",
            "/a b", "/é", "/a%20b", "/{}",
        ] {
            assert!(PathPattern::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn reserved_paths_are_found_by_literal_prefix() {
        let reserved = |p: &str| PathPattern::parse(p).unwrap().reserved_prefix();
        assert_eq!(reserved("/health"), Some("/health"));
        assert_eq!(reserved("/health/"), Some("/health"));
        assert_eq!(reserved("/api/v1/queues/{q}/x"), Some("/api/v1/queues"));
        assert_eq!(reserved("/ui/app.js"), Some("/ui"));
        assert_eq!(reserved("/api/v1/queuesx"), None);
        assert_eq!(reserved("/api/v1/stream/{s}"), Some("/api/v1/stream"));
        assert_eq!(reserved("/api/v1/streamx"), None);
        assert_eq!(reserved("/api/v1/add"), None);
        assert_eq!(reserved("/{a}"), None);
        assert_eq!(reserved("/api"), None);
    }
}
