//! The follower's fetch over HTTPS, for real: `git http-backend` (Debian package `git`) behind
//! a small TLS server on loopback whose certificate is signed by a CA made for the test
//! (`openssl`), trusted only through `--ca-file`. The server lets a request through only with
//! the token from the token file (HTTP basic authentication); a wrong token and an unknown CA
//! are refused, and no error message carries the token.

mod common;

use common::git;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use appliance::follow::git::{self, Auth, Remote};
use appliance::http_client::Tls;
use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

const TOKEN: &str = "s3cret-deploy-token";
const USER: &str = "deploy";

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {what}: {e} (install it: Debian package {what})"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A CA, and a certificate for 127.0.0.1 signed by it: (ca.pem, server.pem, server.key).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |name: &str| dir.join(name);
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    run(
        Command::new("openssl")
            .args(["req", "-x509", "-days", "2", "-subj", "/CN=appliance test CA"])
            .args(ec)
            .args(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"])
            .arg("-keyout")
            .arg(p("ca.key"))
            .arg("-out")
            .arg(p("ca.pem")),
        "openssl",
    );
    run(
        Command::new("openssl")
            .args(["req", "-subj", "/CN=127.0.0.1"])
            .args(ec)
            .arg("-keyout")
            .arg(p("server.key"))
            .arg("-out")
            .arg(p("server.csr")),
        "openssl",
    );
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(
        Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in")
            .arg(p("server.csr"))
            .arg("-CA")
            .arg(p("ca.pem"))
            .arg("-CAkey")
            .arg(p("ca.key"))
            .arg("-extfile")
            .arg(p("ext.cnf"))
            .arg("-out")
            .arg(p("server.pem")),
        "openssl",
    );
    (p("ca.pem"), p("server.pem"), p("server.key"))
}

/// The TLS server: one thread per connection, one request per connection; counts the
/// requests it read and those refused for want of the right token.
struct Server {
    port: u16,
    requests: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
}

fn serve(root: &Path, cert: &Path, key: &Path) -> Server {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(cert).unwrap().collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let config = Arc::new(rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (requests, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (root, counts) = (root.to_path_buf(), (requests.clone(), refused.clone()));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (config, root, counts) = (config.clone(), root.clone(), counts.clone());
            std::thread::spawn(move || {
                let Ok(conn) = rustls::ServerConnection::new(config) else { return };
                let _ = answer(BufReader::new(rustls::StreamOwned::new(conn, stream)), &root, (&counts.0, &counts.1));
            });
        }
    });
    Server { port, requests, refused }
}

type Tls1 = rustls::StreamOwned<rustls::ServerConnection, TcpStream>;

/// Reads one request, hands it to `git http-backend` as CGI, writes its answer back.
fn answer(
    mut r: BufReader<Tls1>,
    root: &Path,
    (requests, refused): (&AtomicUsize, &AtomicUsize),
) -> std::io::Result<()> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    requests.fetch_add(1, Ordering::SeqCst);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("").to_owned());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let body = match (header("content-length"), header("transfer-encoding")) {
        (_, Some(te)) if te.eq_ignore_ascii_case("chunked") => read_chunked(&mut r)?,
        (Some(len), _) => {
            let mut b = vec![0; len.parse().unwrap_or(0)];
            r.read_exact(&mut b)?;
            b
        }
        _ => Vec::new(),
    };
    let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{TOKEN}")));
    let stream = r.get_mut();
    if header("authorization").as_deref() != Some(expected.as_str()) {
        refused.fetch_add(1, Ordering::SeqCst);
        let text = "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        stream.write_all(text.as_bytes())?;
        stream.conn.send_close_notify();
        return stream.flush();
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut cgi = Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding").unwrap_or_default())
        .env("HTTP_GIT_PROTOCOL", header("git-protocol").unwrap_or_default())
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    cgi.stdin.take().expect("piped").write_all(&body)?;
    let out = cgi.wait_with_output()?.stdout;
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, 4));
    let split = split.or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let (at, sep) = split.unwrap_or((0, 0));
    let cgi_headers = String::from_utf8_lossy(&out[..at]).into_owned();
    let mut status = "200 OK".to_owned();
    let mut response = String::new();
    for h in cgi_headers.lines().filter(|l| !l.is_empty()) {
        match h.strip_prefix("Status:") {
            Some(s) => status = s.trim().to_owned(),
            None => response.push_str(&format!("{h}\r\n")),
        }
    }
    let content = &out[at + sep..];
    let head = format!("HTTP/1.1 {status}\r\n{response}Content-Length: {}\r\nConnection: close\r\n\r\n", content.len());
    stream.write_all(head.as_bytes())?;
    stream.write_all(content)?;
    stream.conn.send_close_notify();
    stream.flush()
}

fn read_chunked(r: &mut BufReader<Tls1>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        r.read_line(&mut size)?;
        let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
        let mut chunk = vec![0; size + 2]; // the chunk and its CRLF
        r.read_exact(&mut chunk)?;
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

fn remote(port: u16, token_file: &Path, ca_file: Option<PathBuf>) -> Remote {
    Remote {
        url: format!("https://127.0.0.1:{port}/cfg"),
        reference: "main".into(),
        auth: Auth { token_file: Some(token_file.to_path_buf()), user: USER.into(), ..Default::default() },
        tls: Tls { ca_file },
    }
}

#[test]
fn fetches_over_https_with_the_token_and_the_site_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let root = dir.path().join("served");
    let work = root.join("cfg");
    std::fs::create_dir_all(work.join("profiles")).unwrap();
    std::fs::write(work.join("profiles/appliance.yaml"), "# served over https\n").unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "first"]);
    let head = git(&work, &["rev-parse", "HEAD"]);
    let server = serve(&root, &cert, &key);
    let good = dir.path().join("token");
    std::fs::write(&good, format!("{TOKEN}\n")).unwrap();
    let wrong = dir.path().join("wrong-token");
    std::fs::write(&wrong, "not-the-token\n").unwrap();

    // The right token and the site CA: the branch's commit is fetched.
    let fetched = git::fetch(&dir.path().join("git-a"), &remote(server.port, &good, Some(ca.clone())));
    assert_eq!(fetched.unwrap_or_else(|e| panic!("{e}")), head);
    assert_eq!(server.refused.load(Ordering::SeqCst), 0);

    // A wrong token: the server refuses, and the error does not carry the token.
    let err = git::fetch(&dir.path().join("git-b"), &remote(server.port, &wrong, Some(ca))).unwrap_err().to_string();
    assert!(server.refused.load(Ordering::SeqCst) > 0, "the server saw no request without the token: {err}");
    assert!(!err.contains("not-the-token") && !err.contains(TOKEN), "{err}");
    assert!(err.contains("the server asks for credentials and refused those sent"), "{err}");

    // Without the CA file the server's certificate is not trusted: nothing is fetched.
    let requests_before = server.requests.load(Ordering::SeqCst);
    let err = git::fetch(&dir.path().join("git-c"), &remote(server.port, &good, None)).unwrap_err().to_string();
    assert!(!err.contains(TOKEN), "{err}");
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        requests_before,
        "a request (and the token) crossed an untrusted connection"
    );
}
