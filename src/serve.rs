//! `quantlab serve`: a small static file server for the playground (native only).
//!
//! It serves the repository root (index.html, www/, models/) on the loopback interface. It is a
//! development server, not a web server for the internet, but it still treats request paths as
//! hostile: only plain path segments are accepted (no `..`, no hidden names such as `.git`, no
//! backslashes or NUL bytes), so nothing outside the root and nothing hidden can be read.
//!
//! Two headers matter to the page:
//! - `Content-Type: application/wasm` lets the browser compile the module while it streams.
//! - `Cross-Origin-Opener-Policy` / `Cross-Origin-Embedder-Policy` make the page "cross-origin
//!   isolated", which is what enables `SharedArrayBuffer`; the page uses one to cancel a running
//!   evaluation inside the worker (see www/worker.js).
//! - `Service-Worker-Allowed: /` on www/sw.js lets that service worker control the page at the
//!   root, so the page works offline after its first load.

use crate::{Error, Result};
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tiny_http::{Header, Method, Request, Response};

/// Requests are handled by this many threads, so a page can fetch its scripts while the 100 MB
/// model streams.
const WORKERS: usize = 4;

/// Longest request path accepted (bytes, before decoding).
const MAX_PATH_LEN: usize = 1024;

/// The page's service worker (offline use). A worker may only control pages under its own
/// directory unless the server allows a wider scope with `Service-Worker-Allowed`.
const SERVICE_WORKER: &str = "www/sw.js";

/// A bound, not yet running server.
pub struct Server {
    root: PathBuf,
    http: Arc<tiny_http::Server>,
    addr: SocketAddr,
}

impl Server {
    /// Bind to `127.0.0.1:port` (0 picks a free port).
    pub fn bind(root: &Path, port: u16) -> Result<Server> {
        let meta = std::fs::metadata(root).map_err(|e| Error::io(root.display(), e))?;
        if !meta.is_dir() {
            return Err(Error::io(
                root.display(),
                std::io::Error::other("the root to serve is not a directory"),
            ));
        }
        let want = SocketAddr::from(([127, 0, 0, 1], port));
        let http = tiny_http::Server::http(want)
            .map_err(|e| Error::io(want, std::io::Error::other(e.to_string())))?;
        let addr = http
            .server_addr()
            .to_ip()
            .ok_or_else(|| Error::io(want, std::io::Error::other("not bound to an IP address")))?;
        Ok(Server {
            root: root.to_path_buf(),
            http: Arc::new(http),
            addr,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Serve until the process ends.
    pub fn run(self) {
        let root = Arc::new(self.root);
        let threads: Vec<_> = (0..WORKERS)
            .map(|_| {
                let http = Arc::clone(&self.http);
                let root = Arc::clone(&root);
                std::thread::spawn(move || {
                    // `recv` fails only when the listener is gone; then this worker stops.
                    while let Ok(request) = http.recv() {
                        handle(&root, request);
                    }
                })
            })
            .collect();
        for t in threads {
            // A worker that panicked has already lost its request; the others keep serving.
            let _ = t.join();
        }
    }
}

/// Bind, print the URL and serve `root` until the process ends.
pub fn serve(root: &Path, port: u16) -> Result<()> {
    let server = Server::bind(root, port)?;
    println!("serving {} at {}", root.display(), server.url());
    server.run();
    Ok(())
}

fn handle(root: &Path, request: Request) {
    let response = respond(root, request.method(), request.url());
    // The client may have gone away; nothing useful can be done about it here.
    let _ = request.respond(response);
}

type Reply = Response<Box<dyn std::io::Read + Send>>;

fn respond(root: &Path, method: &Method, url: &str) -> Reply {
    if !matches!(method, Method::Get | Method::Head) {
        return with(
            text(405, "only GET and HEAD are served\n"),
            "Allow",
            "GET, HEAD",
        );
    }
    let Some(rel) = resolve(url) else {
        return text(400, "bad path\n");
    };
    let mut path = root.join(&rel);
    if path.is_dir() {
        path.push("index.html");
    }
    match File::open(&path).and_then(|f| f.metadata().map(|m| (f, m))) {
        Ok((file, meta)) if meta.is_file() => {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let body = Box::new(file) as Box<dyn std::io::Read + Send>;
            let mut r = Response::new(
                200.into(),
                Vec::new(),
                body,
                usize::try_from(meta.len()).ok(),
                None,
            );
            r = with(r, "Content-Type", mime_type(name));
            r = with(r, "Cache-Control", cache_control(&rel));
            r = with(r, "X-Content-Type-Options", "nosniff");
            if rel == Path::new(SERVICE_WORKER) {
                // The worker lives in www/ but must control the page at the root.
                r = with(r, "Service-Worker-Allowed", "/");
            }
            r = with(r, "Cross-Origin-Opener-Policy", "same-origin");
            with(r, "Cross-Origin-Embedder-Policy", "require-corp")
        }
        _ => text(404, "not found\n"),
    }
}

/// Turn a request target into a relative path under the root, or `None` if it is not a plain
/// path: query and fragment are dropped, `%XX` escapes decoded, and every segment must be a
/// plain name (no `.`/`..`, nothing hidden, no separators or NUL after decoding).
pub fn resolve(url: &str) -> Option<PathBuf> {
    if url.len() > MAX_PATH_LEN || !url.starts_with('/') {
        return None;
    }
    let path = url.split(['?', '#']).next().unwrap_or("");
    let mut rel = PathBuf::new();
    for raw in path.split('/').filter(|s| !s.is_empty()) {
        let seg = percent_decode(raw)?;
        let plain = !seg.starts_with('.')
            && !seg.contains(['/', '\\', '\0', ':'])
            && !seg.chars().any(char::is_control);
        if !plain {
            return None;
        }
        rel.push(seg);
    }
    Some(rel)
}

/// Decode `%XX` escapes; `None` for a malformed escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// MIME type by extension. `application/wasm` is required for streaming compilation.
pub fn mime_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "wasm" => "application/wasm",
        "json" => "application/json",
        "txt" | "md" | "wgsl" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        _ => "application/octet-stream",
    }
}

/// Model files are large and never change under the same name (fetch-model.sh checks their
/// checksum), so the browser may keep them; everything else is revalidated so an edit or a
/// rebuild shows on the next reload.
fn cache_control(rel: &Path) -> &'static str {
    if rel.starts_with("models") {
        "public, max-age=86400"
    } else {
        "no-cache"
    }
}

/// Add a header. Every name and value here is an ASCII constant or a MIME type from the table
/// above, which tiny_http always accepts; a value it refused would just be left out.
fn with(response: Reply, name: &str, value: &str) -> Reply {
    match Header::from_bytes(name.as_bytes(), value.as_bytes()) {
        Ok(h) => response.with_header(h),
        Err(()) => response,
    }
}

fn text(status: u16, body: &str) -> Reply {
    let data = body.as_bytes().to_vec();
    let len = data.len();
    let body = Box::new(std::io::Cursor::new(data)) as Box<dyn std::io::Read + Send>;
    let r = Response::new(status.into(), Vec::new(), body, Some(len), None);
    with(r, "Content-Type", "text/plain; charset=utf-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    #[test]
    fn resolve_accepts_plain_paths() {
        assert_eq!(resolve("/"), Some(PathBuf::new()));
        assert_eq!(
            resolve("/www/pkg/quantlab_bg.wasm?v=1"),
            Some(PathBuf::from("www/pkg/quantlab_bg.wasm"))
        );
        assert_eq!(
            resolve("/www/texts/my%20text.txt"),
            Some(PathBuf::from("www/texts/my text.txt"))
        );
    }

    #[test]
    fn resolve_refuses_traversal_and_hidden_names() {
        for bad in [
            "/../etc/passwd",
            "/www/../../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/www/%2E%2E/%2e%2e/x",
            "/.git/config",
            "/www/%2fetc",
            "/www/..%5c..%5cx",
            "/a%00b",
            "/a%zz",
            "/a%2",
            "relative",
            "/C:/x",
        ] {
            assert_eq!(resolve(bad), None, "{bad}");
        }
        assert_eq!(resolve(&format!("/{}", "a".repeat(MAX_PATH_LEN))), None);
    }

    #[test]
    fn mime_types() {
        assert_eq!(mime_type("quantlab_bg.wasm"), "application/wasm");
        assert_eq!(mime_type("worker.js"), "text/javascript; charset=utf-8");
        assert_eq!(mime_type("index.HTML"), "text/html; charset=utf-8");
        assert_eq!(mime_type("m.gguf"), "application/octet-stream");
        assert_eq!(mime_type("noext"), "application/octet-stream");
    }

    /// One raw HTTP/1.0 exchange; returns (status line, headers + body as text).
    fn get(addr: &str, target: &str) -> (String, String) {
        let mut s = TcpStream::connect(addr).expect("connect");
        write!(s, "GET {target} HTTP/1.0\r\nHost: x\r\n\r\n").expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        let status = out.lines().next().unwrap_or("").to_string();
        (status, out)
    }

    #[test]
    fn serves_files_with_headers_and_refuses_escapes() {
        let dir = std::env::temp_dir().join(format!("quantlab-serve-{}", std::process::id()));
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("www")).expect("mkdir");
        std::fs::write(root.join("index.html"), "<p>hi</p>").expect("write");
        std::fs::write(root.join("www/m.wasm"), [0u8, 97, 115, 109]).expect("write");
        std::fs::write(root.join("www/sw.js"), "self.x = 1;").expect("write");
        std::fs::write(dir.join("secret.txt"), "secret").expect("write");
        std::fs::create_dir_all(root.join(".git")).expect("mkdir");
        std::fs::write(root.join(".git/config"), "secret").expect("write");

        let server = Server::bind(&root, 0).expect("bind");
        let addr = server
            .url()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        std::thread::spawn(move || server.run());

        let (status, all) = get(&addr, "/");
        assert!(status.contains("200"), "{status}");
        assert!(all.contains("<p>hi</p>"));
        assert!(all.to_ascii_lowercase().contains("content-type: text/html"));
        assert!(all.contains("Cross-Origin-Embedder-Policy: require-corp"));

        let (status, all) = get(&addr, "/www/sw.js");
        assert!(status.contains("200"), "{status}");
        assert!(all.contains("Content-Type: text/javascript"), "{all}");
        assert!(all.contains("Service-Worker-Allowed: /"), "{all}");
        let (_, all) = get(&addr, "/www/m.wasm");
        assert!(!all.contains("Service-Worker-Allowed"), "{all}");

        let (status, all) = get(&addr, "/www/m.wasm");
        assert!(status.contains("200"), "{status}");
        assert!(all.contains("Content-Type: application/wasm"), "{all}");

        for bad in ["/../secret.txt", "/%2e%2e/secret.txt", "/.git/config"] {
            let (status, all) = get(&addr, bad);
            assert!(status.contains("400"), "{bad}: {status}");
            assert!(!all.contains("secret"), "{bad} leaked");
        }
        let (status, _) = get(&addr, "/missing.js");
        assert!(status.contains("404"), "{status}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
