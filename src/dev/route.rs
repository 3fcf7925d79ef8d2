//! Which file answers a URL in the dev HTTP front: a static file, a `.php`
//! script, or the front controller `index.php` (as Symfony's local server
//! does). Dotfiles and `..` are refused before the filesystem is looked at.
//!
//! Pure: the filesystem is asked through a `kind(path)` function.

use std::path::{Path, PathBuf};

use super::cgi::Script;

/// What a path names on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Missing,
}

/// How a request is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Serve this file as is.
    Static(PathBuf),
    /// Run this PHP script (relative to the document root).
    Php(Script),
    /// A dotfile, `..`, or an undecodable path.
    Forbidden,
    /// Nothing to serve and no front controller.
    NotFound,
}

/// The front controller every unknown path goes to.
pub const FRONT_CONTROLLER: &str = "index.php";

/// Decodes `%XX` escapes; `None` for a bad escape, NUL, or invalid UTF-8.
pub fn percent_decode(raw: &str) -> Option<String> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    if out.contains(&0) {
        return None;
    }
    String::from_utf8(out).ok()
}

/// The decoded path's segments, or `None` when the path must be refused:
/// a `..` segment, a dotfile or dot-directory (except `.well-known`), a
/// backslash. Empty and `.` segments are dropped.
pub fn safe_segments(decoded: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    for seg in decoded.split('/') {
        if seg.is_empty() || seg == "." {
            continue;
        }
        if seg.contains('\\') || (seg.starts_with('.') && seg != ".well-known") {
            return None;
        }
        out.push(seg);
    }
    Some(out)
}

/// Routes the raw (percent-encoded) URL path against `root`.
pub fn route(root: &Path, raw_path: &str, kind: impl Fn(&Path) -> Kind) -> Route {
    let Some(decoded) = percent_decode(raw_path) else {
        return Route::Forbidden;
    };
    let Some(segs) = safe_segments(&decoded) else {
        return Route::Forbidden;
    };
    let mut dir = root.to_path_buf();
    for (i, seg) in segs.iter().enumerate() {
        let candidate = dir.join(seg);
        match kind(&candidate) {
            Kind::Dir => dir = candidate,
            Kind::File if seg.ends_with(".php") => {
                let rest = &segs[i + 1..];
                return Route::Php(Script {
                    script_name: format!("/{}", segs[..=i].join("/")),
                    path_info: if rest.is_empty() {
                        String::new()
                    } else {
                        format!("/{}", rest.join("/"))
                    },
                });
            }
            Kind::File if i + 1 == segs.len() => return Route::Static(candidate),
            // `/style.css/more`: a file can't have children.
            Kind::File => return Route::NotFound,
            Kind::Missing => return front_controller(root, &decoded, &kind),
        }
    }
    // Every segment was a directory: its index.php, else its index.html,
    // else the front controller.
    let prefix: String = segs.iter().map(|s| format!("/{s}")).collect();
    if segs.is_empty() {
        return front_controller(root, "", &kind);
    }
    if kind(&dir.join(FRONT_CONTROLLER)) == Kind::File {
        return Route::Php(Script {
            script_name: format!("{prefix}/{FRONT_CONTROLLER}"),
            path_info: String::new(),
        });
    }
    if kind(&dir.join("index.html")) == Kind::File {
        return Route::Static(dir.join("index.html"));
    }
    front_controller(root, &decoded, &kind)
}

fn front_controller(root: &Path, decoded: &str, kind: &impl Fn(&Path) -> Kind) -> Route {
    if kind(&root.join(FRONT_CONTROLLER)) != Kind::File {
        return Route::NotFound;
    }
    let path_info = if decoded.is_empty() || decoded == "/" {
        String::new()
    } else if decoded.starts_with('/') {
        decoded.to_string()
    } else {
        format!("/{decoded}")
    };
    Route::Php(Script {
        script_name: format!("/{FRONT_CONTROLLER}"),
        path_info,
    })
}

/// The real filesystem's answer, following symlinks (a project may link
/// e.g. `public/storage` elsewhere on purpose).
pub fn fs_kind(p: &Path) -> Kind {
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => Kind::Dir,
        Ok(m) if m.is_file() => Kind::File,
        _ => Kind::Missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(files: &'static [&'static str]) -> impl Fn(&Path) -> Kind {
        move |p: &Path| {
            let rel = p.strip_prefix("/r").unwrap().to_str().unwrap().to_string();
            if files.contains(&rel.as_str()) {
                Kind::File
            } else if rel.is_empty() || files.iter().any(|f| f.starts_with(&format!("{rel}/"))) {
                Kind::Dir
            } else {
                Kind::Missing
            }
        }
    }

    const FILES: &[&str] = &[
        "index.php",
        "style.css",
        "info.php",
        "admin/index.php",
        "docs/index.html",
        "img/a b.png",
        ".env",
    ];

    fn r(path: &str) -> Route {
        route(Path::new("/r"), path, fake(FILES))
    }

    fn php(name: &str, info: &str) -> Route {
        Route::Php(Script {
            script_name: name.into(),
            path_info: info.into(),
        })
    }

    #[test]
    fn routes() {
        assert_eq!(r("/"), php("/index.php", ""));
        assert_eq!(r(""), php("/index.php", ""));
        assert_eq!(r("/index.php"), php("/index.php", ""));
        assert_eq!(r("/style.css"), Route::Static("/r/style.css".into()));
        assert_eq!(r("/img/a%20b.png"), Route::Static("/r/img/a b.png".into()));
        assert_eq!(r("/blog/42"), php("/index.php", "/blog/42"));
        assert_eq!(r("/info.php/extra/x"), php("/info.php", "/extra/x"));
        assert_eq!(r("/admin/"), php("/admin/index.php", ""));
        assert_eq!(r("/docs"), Route::Static("/r/docs/index.html".into()));
        assert_eq!(r("/style.css/x"), Route::NotFound);
        assert_eq!(r("/missing.php"), php("/index.php", "/missing.php"));
        assert_eq!(r("//blog//42/"), php("/index.php", "//blog//42/"));
    }

    #[test]
    fn refused() {
        for p in [
            "/../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/%2E%2E%2Fetc%2Fpasswd",
            "/a/../../x",
            "/.env",
            "/%2eenv",
            "/.git/config",
            "/x/.hidden",
            "/a%00b",
            "/a%zz",
            "/a%5c..%5cb",
        ] {
            assert_eq!(r(p), Route::Forbidden, "{p}");
        }
        assert_eq!(r("/.well-known/x"), php("/index.php", "/.well-known/x"));
    }

    #[test]
    fn no_front_controller() {
        let k = fake(&["style.css"]);
        assert_eq!(route(Path::new("/r"), "/nope", &k), Route::NotFound);
        assert_eq!(route(Path::new("/r"), "/", &k), Route::NotFound);
    }
}
