//! The daemon's outgoing HTTP(S): artifact downloads and git's smart HTTP both use reqwest's
//! blocking client with rustls. Roots are Mozilla's, built into the binary, because the
//! appliance image has no CA bundle; `--ca-file` adds a site's own CA (an internal git server
//! or mirror). Every client is made and used on a blocking thread, never on the async runtime.

use reqwest::blocking::{Client, ClientBuilder};
use reqwest::Certificate;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

/// How the daemon's HTTP clients verify servers.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// PEM file of extra trusted CA certificates.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("CA file {}: {error}", path.display())]
    CaFile { path: PathBuf, error: String },
    #[error("building the HTTP client: {0}")]
    Build(#[from] reqwest::Error),
}

/// rustls needs one process-wide crypto provider; reqwest is built without its own choice.
fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Fails only when another provider was installed first, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl Tls {
    /// The trusted roots: Mozilla's, plus the CA file's.
    fn roots(&self) -> Result<Vec<Certificate>, ClientError> {
        let mut roots: Vec<Certificate> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .filter_map(|der| Certificate::from_der(der.as_ref()).ok())
            .collect();
        if let Some(path) = &self.ca_file {
            roots.extend(read_ca_file(path)?);
        }
        Ok(roots)
    }

    /// Applies these roots to a client builder (also used for gix's HTTP transport).
    pub fn configure(&self, builder: ClientBuilder) -> Result<ClientBuilder, ClientError> {
        install_crypto();
        Ok(builder.tls_backend_rustls().tls_certs_only(self.roots()?))
    }

    /// A client for downloads: connects within 20 s, gives up on a read that stalls for 60 s
    /// (a cut is resumed by the caller), follows redirects.
    pub fn client(&self) -> Result<Client, ClientError> {
        let builder = Client::builder()
            .connect_timeout(Duration::from_secs(20))
            // In the blocking client this bounds each read and write (not the whole
            // transfer), so a long download goes on as long as bytes keep coming.
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("appliance/", env!("CARGO_PKG_VERSION")));
        Ok(self.configure(builder)?.build()?)
    }
}

fn read_ca_file(path: &Path) -> Result<Vec<Certificate>, ClientError> {
    let err = |error: String| ClientError::CaFile { path: path.to_path_buf(), error };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs = Certificate::from_pem_bundle(&pem).map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// `url` with any user name and password removed, for logs, status and rendered configs.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://{host}{path}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_leave_in_a_url() {
        assert_eq!(redacted("https://user:secret@git.example/r.git"), "https://git.example/r.git");
        assert_eq!(redacted("https://tok@git.example"), "https://git.example");
        assert_eq!(redacted("git://h/r@x"), "git://h/r@x");
        assert_eq!(redacted("ssh://git@h/r"), "ssh://h/r");
        assert_eq!(redacted("/local/path"), "/local/path");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("ca.pem");
        std::fs::write(&f, "not a certificate").unwrap();
        let err = Tls { ca_file: Some(f) }.client().err().unwrap().to_string();
        assert!(err.contains("ca.pem"), "{err}");
    }
}
