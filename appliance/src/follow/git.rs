//! Git, through gix (pure Rust, so neither the host nor the image needs a git program): fetch
//! one branch of the operator's repository into a bare repository, and write one directory of
//! a commit's tree into a fresh directory.
//!
//! Transports: `git://` natively; `http(s)://` through reqwest with the daemon's TLS roots and,
//! with a token file, `Authorization: Basic` (user + token, what GitHub, GitLab and Gitea accept
//! for tokens) on every request; `ssh://` and `user@host:path` through the system's `ssh`
//! program, with a deploy key when one is given. Credentials are never logged: URLs are logged
//! redacted and the header lives only in the transport's options.

use crate::http_client::{redacted, Tls};
use gix::protocol::transport::client::blocking_io::http as gix_http;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

/// Which repository and branch, and how to authenticate.
#[derive(Debug, Clone)]
pub struct Remote {
    pub url: String,
    /// A branch name (`main`) or a full ref (`refs/tags/v1`).
    pub reference: String,
    pub auth: Auth,
    pub tls: Tls,
}

#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// HTTPS: a file holding a token (first line; surrounding white space ignored).
    pub token_file: Option<PathBuf>,
    /// HTTPS: the user name sent with the token.
    pub user: String,
    /// SSH: a private key (a deploy key) for `ssh -i`.
    pub ssh_key: Option<PathBuf>,
    /// SSH: the known-hosts file; a host seen first is added to it (accept-new).
    pub known_hosts: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git repository {}: {message}", path.display())]
    Repo { path: PathBuf, message: String },
    #[error("fetching {ref_name} from {url}: {message}")]
    Fetch { url: String, ref_name: String, message: String },
    #[error("token file {}: {message}", path.display())]
    Token { path: PathBuf, message: String },
    #[error("commit {commit}: {message}")]
    Tree { commit: String, message: String },
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },
}

/// What the server refused, for the fetch's error message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", if *ssh {
    "the server refused the SSH key (is the deploy key's public half in the server's authorized keys?)"
} else {
    "the server asks for credentials and refused those sent (is the token file's token valid for this repository?)"
})]
struct AuthRefused {
    ssh: bool,
}

impl Remote {
    /// The ref on the remote, in full.
    pub fn remote_ref(&self) -> String {
        if self.reference.starts_with("refs/") {
            self.reference.clone()
        } else {
            format!("refs/heads/{}", self.reference)
        }
    }

    /// Where the fetched ref is kept in the local repository.
    fn tracking_ref(&self) -> String {
        format!("refs/appliance/{}", self.remote_ref().trim_start_matches("refs/"))
    }

    fn is_http(&self) -> bool {
        self.url.starts_with("http://") || self.url.starts_with("https://")
    }
}

/// Opens (creating it when missing) the bare repository at `dir`, isolated from the host's git
/// configuration and environment.
fn open(dir: &Path) -> Result<gix::Repository, GitError> {
    let err = |e: &dyn std::fmt::Display| GitError::Repo { path: dir.to_path_buf(), message: e.to_string() };
    if !dir.join("HEAD").is_file() {
        std::fs::create_dir_all(dir).map_err(|error| GitError::Io { path: dir.to_path_buf(), error })?;
        gix::init_bare(dir).map_err(|e| err(&e))?;
    }
    gix::open_opts(dir, gix::open::Options::isolated()).map_err(|e| err(&e))
}

/// Fetches the remote's ref into the repository at `dir` and returns the commit it points to
/// (hex).
pub fn fetch(dir: &Path, remote: &Remote) -> Result<String, GitError> {
    let mut repo = open(dir)?;
    let url = redacted(&remote.url);
    let fail = |message: String| GitError::Fetch { url: url.clone(), ref_name: remote.reference.clone(), message };
    if let Some(command) = ssh_command(&remote.auth) {
        let mut config = repo.config_snapshot_mut();
        config.set_value(&gix::config::tree::Core::SSH_COMMAND, command.as_str()).map_err(|e| fail(e.to_string()))?;
        config.commit().map_err(|e| fail(e.to_string()))?;
    }
    let spec = format!("+{}:{}", remote.remote_ref(), remote.tracking_ref());
    let gix_remote = repo
        .remote_at(remote.url.as_str())
        .map_err(|e| fail(e.to_string()))?
        .with_refspecs(Some(spec.as_str()), gix::remote::Direction::Fetch)
        .map_err(|e| fail(e.to_string()))?;
    let mut connection = gix_remote.connect(gix::remote::Direction::Fetch).map_err(|e| fail(e.to_string()))?;
    // Never ask a helper or a terminal for credentials: the daemon has neither. gix asks only
    // once the server has refused us, and would then report just that no credentials came back
    // (dropping ssh's own "Permission denied"): say what was refused instead.
    let refused = AuthRefused { ssh: !remote.is_http() };
    connection.set_credentials(move |_| Err(gix::Exn::new(refused.clone()).into()));
    if remote.is_http() {
        connection.set_transport_options(Box::new(http_options(remote)?));
    }
    let interrupt = AtomicBool::new(false);
    connection
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(|e| fail(with_causes(&e)))?
        .receive(gix::progress::Discard, &interrupt)
        .map_err(|e| fail(with_causes(&e)))?;
    let mut reference = repo
        .find_reference(remote.tracking_ref().as_str())
        .map_err(|_| fail(format!("the remote has no {}", remote.remote_ref())))?;
    let commit = reference.peel_to_commit().map_err(|e| fail(e.to_string()))?;
    Ok(commit.id.to_string())
}

/// An error and its causes, one after the other: gix's outer messages ("failed to obtain
/// credentials") leave out what actually happened.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        // Some layers already repeat their cause in their own message.
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// The transport options of an HTTP(S) remote: our TLS roots, and the token when there is one.
fn http_options(remote: &Remote) -> Result<gix_http::Options, GitError> {
    let mut options = gix_http::Options::default();
    if let Some(header) = authorization(&remote.auth)? {
        options.extra_headers.push(header);
    }
    let tls = remote.tls.clone();
    let backend = gix_http::reqwest::Options {
        configure_client: Some(Box::new(move |builder| tls.configure(builder).map_err(|e| gix::Exn::new(e).into()))),
        configure_request: None,
    };
    options.backend = Some(Arc::new(Mutex::new(backend)));
    Ok(options)
}

/// `Authorization: Basic base64(user:token)` from the token file, if one is configured.
pub fn authorization(auth: &Auth) -> Result<Option<String>, GitError> {
    let Some(path) = &auth.token_file else { return Ok(None) };
    let err = |message: String| GitError::Token { path: path.clone(), message };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(err("empty".into()));
    }
    use base64::Engine as _;
    let pair = base64::engine::general_purpose::STANDARD.encode(format!("{}:{token}", auth.user));
    Ok(Some(format!("Authorization: Basic {pair}")))
}

/// The `core.sshCommand` for a deploy key: batch mode (no prompts), only that key, new hosts
/// recorded in our own known-hosts file. Paths are single-quoted for the shell gix runs it with.
fn ssh_command(auth: &Auth) -> Option<String> {
    let key = auth.ssh_key.as_ref()?;
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    let mut cmd =
        format!("ssh -i {} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=accept-new", quote(key));
    if let Some(hosts) = &auth.known_hosts {
        cmd.push_str(&format!(" -o UserKnownHostsFile={}", quote(hosts)));
    }
    Some(cmd)
}

/// Writes the directory `subdir` of `commit`'s tree (the whole tree for an empty `subdir`) into
/// `dest`, which must not exist yet. Regular and executable files and symlinks are written;
/// submodules are refused (their content is not in this repository).
pub fn checkout(dir: &Path, commit: &str, subdir: &Path, dest: &Path) -> Result<(), GitError> {
    let repo = open(dir)?;
    let fail = |message: String| GitError::Tree { commit: commit.to_string(), message };
    let id = gix::ObjectId::from_hex(commit.as_bytes()).map_err(|e| fail(e.to_string()))?;
    let tree = repo.find_commit(id).map_err(|e| fail(e.to_string()))?.tree().map_err(|e| fail(e.to_string()))?;
    let tree = if subdir.as_os_str().is_empty() {
        tree
    } else {
        let entry = tree
            .lookup_entry_by_path(subdir)
            .map_err(|e| fail(e.to_string()))?
            .ok_or_else(|| fail(format!("no directory {} in the repository", subdir.display())))?;
        if !entry.mode().is_tree() {
            return Err(fail(format!("{} is not a directory", subdir.display())));
        }
        repo.find_tree(entry.object_id()).map_err(|e| fail(e.to_string()))?
    };
    write_tree(&repo, &tree, dest, 0).map_err(|e| match e {
        WriteError::Git(message) => fail(message),
        WriteError::Io(path, error) => GitError::Io { path, error },
    })
}

enum WriteError {
    Git(String),
    Io(PathBuf, std::io::Error),
}

fn write_tree(repo: &gix::Repository, tree: &gix::Tree<'_>, dest: &Path, depth: usize) -> Result<(), WriteError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| WriteError::Io(p, e)
    };
    if depth > 32 {
        return Err(WriteError::Git("directories nest more than 32 deep".into()));
    }
    std::fs::create_dir(dest).map_err(io(dest))?;
    for entry in tree.iter() {
        let entry = entry.map_err(|e| WriteError::Git(e.to_string()))?;
        let name = entry.filename().to_string();
        if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
            return Err(WriteError::Git(format!("bad file name {name:?} in a tree")));
        }
        let path = dest.join(&name);
        let mode = entry.mode();
        if mode.is_tree() {
            let sub = repo.find_tree(entry.oid().to_owned()).map_err(|e| WriteError::Git(e.to_string()))?;
            write_tree(repo, &sub, &path, depth + 1)?;
        } else if mode.is_link() {
            let blob = repo.find_blob(entry.oid().to_owned()).map_err(|e| WriteError::Git(e.to_string()))?;
            let target = String::from_utf8_lossy(&blob.data).into_owned();
            std::os::unix::fs::symlink(target, &path).map_err(io(&path))?;
        } else if mode.is_blob() {
            let blob = repo.find_blob(entry.oid().to_owned()).map_err(|e| WriteError::Git(e.to_string()))?;
            std::fs::write(&path, &blob.data).map_err(io(&path))?;
            let perm = if mode.is_executable() { 0o755 } else { 0o644 };
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(perm)).map_err(io(&path))?;
        } else {
            return Err(WriteError::Git(format!("{name} is a submodule, which the appliance does not follow")));
        }
    }
    Ok(())
}

/// The first line of `commit`'s message, for the log.
pub fn summary(dir: &Path, commit: &str) -> Option<String> {
    let repo = open(dir).ok()?;
    let id = gix::ObjectId::from_hex(commit.as_bytes()).ok()?;
    let c = repo.find_commit(id).ok()?;
    let message = c.message_raw_sloppy().to_string();
    Some(message.lines().next().unwrap_or("").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_goes_into_the_authorization_header_only() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("token");
        std::fs::write(&file, "s3cret-token\n").unwrap();
        let auth = Auth { token_file: Some(file.clone()), user: "git".into(), ..Auth::default() };
        use base64::Engine as _;
        let want = base64::engine::general_purpose::STANDARD.encode("git:s3cret-token");
        assert_eq!(authorization(&auth).unwrap(), Some(format!("Authorization: Basic {want}")));
        // What gets logged (the remote, its URL) never holds the token.
        let remote = Remote {
            url: "https://user:pw@git.example/r.git".into(),
            reference: "main".into(),
            auth,
            tls: Default::default(),
        };
        assert!(!format!("{remote:?}").contains("s3cret"));
        assert_eq!(redacted(&remote.url), "https://git.example/r.git");
        std::fs::write(&file, "\n").unwrap();
        let e = authorization(&remote.auth).unwrap_err().to_string();
        assert!(e.contains("empty") && !e.contains("s3cret"), "{e}");
        assert_eq!(authorization(&Auth::default()).unwrap(), None);
    }

    #[test]
    fn refs_and_the_ssh_command() {
        let r = |reference: &str| Remote {
            url: "git://h/r".into(),
            reference: reference.into(),
            auth: Auth::default(),
            tls: Default::default(),
        };
        assert_eq!(
            (r("main").remote_ref(), r("main").tracking_ref()),
            ("refs/heads/main".into(), "refs/appliance/heads/main".into())
        );
        assert_eq!(r("refs/tags/v1").remote_ref(), "refs/tags/v1");
        let auth =
            Auth { ssh_key: Some("/k/it's".into()), known_hosts: Some("/s/known_hosts".into()), ..Auth::default() };
        assert_eq!(
            ssh_command(&auth).unwrap(),
            "ssh -i '/k/it'\\''s' -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=accept-new \
             -o UserKnownHostsFile='/s/known_hosts'"
        );
        assert_eq!(ssh_command(&Auth::default()), None);
    }
}
