//! `--compare plaintext`: the certificates the TLS gateway serves, and what a client negotiates
//! with it.
//!
//! A CA and a server certificate for 127.0.0.1 (and localhost), both EC P-256, made at run time
//! with the `openssl` command (Debian's `openssl` package) in the run's work dir, valid for two
//! days. The gateway serves the server certificate (`--tls-cert`, `--tls-key`, PKCS#8); the
//! clients verify it against the CA (`ssl.ca.location`), host name included (librdkafka's
//! default `ssl.endpoint.identification.algorithm=https`, against the IP address in the
//! certificate's subjectAltName).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The files a TLS gateway and its clients need.
#[derive(Clone, Debug)]
pub struct Files {
    /// The CA's certificate (PEM): what clients trust.
    pub ca: PathBuf,
    /// The server's certificate (PEM), signed by the CA.
    pub cert: PathBuf,
    /// The server's key (PEM, PKCS#8).
    pub key: PathBuf,
    /// What they are, for the report: key type and the openssl that made them.
    pub description: String,
}

/// The server certificate's subjectAltName: the address clients connect to (the gateway's
/// loopback listener, which it also advertises), and a name for good measure.
const SAN: &str = "subjectAltName=IP:127.0.0.1,DNS:localhost";

/// Makes a CA and a server certificate signed by it in `dir` (created when missing).
pub fn make(dir: &Path) -> Result<Files> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        format!(
            "{SAN}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\n"
        ),
    )
    .with_context(|| format!("writing {}", ext.display()))?;
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &ec[..],
            &["-keyout", "ca.key", "-out", "ca.pem"],
            &["-days", "2", "-subj", "/CN=proxy-bench CA"],
        ]
        .concat(),
    )?;
    openssl(
        dir,
        &[
            &["req"][..],
            &ec[..],
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-sha256",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    )?;
    let version = output(dir, &["version"]).unwrap_or_else(|_| "openssl".into());
    Ok(Files {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        description: format!(
            "EC P-256 server certificate for 127.0.0.1 signed by an EC P-256 CA, made at run \
             time by {}",
            version.trim()
        ),
    })
}

/// Runs `openssl args` in `dir`; fails with its output when it fails.
fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    output(dir, args).map(drop)
}

fn output(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .context(
            "running `openssl` (the certificates of --compare plaintext are made with it: \
             `apt-get install openssl`)",
        )?;
    if !out.status.success() {
        bail!(
            "`openssl {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What a client with OpenSSL's default settings (librdkafka's here: the same library, no
/// `ssl.cipher.suites` set) negotiates with the TLS listener at `addr`, verifying it against
/// `ca`: "TLSv1.3, TLS_AES_256_GCM_SHA384, key exchange X25519", from `openssl s_client`.
pub fn negotiated(addr: SocketAddr, ca: &Path) -> Result<String> {
    let mut child = Command::new("openssl")
        .args(["s_client", "-brief", "-verify_return_error", "-connect"])
        .arg(addr.to_string())
        .arg("-CAfile")
        .arg(ca)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running `openssl s_client`")?;
    // It closes after the handshake, its standard input being empty; a listener that never
    // finishes the handshake must not hold the run.
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`openssl s_client -connect {addr}` did not finish in 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    parse_brief(&text).with_context(|| {
        format!(
            "`openssl s_client -connect {addr}` ({}): {}",
            out.status,
            text.trim()
        )
    })
}

/// The protocol, cipher suite and key exchange from `openssl s_client -brief`'s output, when
/// the handshake succeeded and the certificate verified.
fn parse_brief(text: &str) -> Result<String> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    };
    match (
        field("Protocol version"),
        field("Ciphersuite"),
        field("Verification"),
    ) {
        (Some(protocol), Some(cipher), Some(v)) if v == "OK" => {
            let mut out = format!("{protocol}, {cipher}");
            if let Some(kx) = field("Server Temp Key").or_else(|| field("Negotiated TLS1.3 group"))
            {
                out.push_str(&format!(", key exchange {kx}"));
            }
            Ok(out)
        }
        (_, _, Some(v)) if v != "OK" => bail!("the certificate did not verify: {v}"),
        _ => bail!("no completed handshake in its output"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_s_client_brief_output() {
        let text = "CONNECTION ESTABLISHED\nProtocol version: TLSv1.3\n\
                    Ciphersuite: TLS_AES_256_GCM_SHA384\nPeer certificate: CN = 127.0.0.1\n\
                    Hash used: SHA256\nSignature type: ECDSA\nVerification: OK\n\
                    Server Temp Key: X25519, 253 bits\nDONE\n";
        assert_eq!(
            parse_brief(text).unwrap(),
            "TLSv1.3, TLS_AES_256_GCM_SHA384, key exchange X25519, 253 bits"
        );
        let bad = "CONNECTION ESTABLISHED\nProtocol version: TLSv1.3\n\
                   Ciphersuite: TLS_AES_256_GCM_SHA384\nVerification error: unable to get local \
                   issuer certificate\nVerification: unable to get local issuer certificate\n";
        assert!(parse_brief(bad).is_err());
        assert!(parse_brief("connect:errno=111\n").is_err());
    }

    /// The certificates verify against their CA for 127.0.0.1 (needs the `openssl` command,
    /// which the project's install-deps installs).
    #[test]
    fn makes_a_ca_and_a_server_certificate_for_loopback() {
        let dir = std::env::temp_dir().join(format!("proxy-bench-tls-test-{}", std::process::id()));
        let files = make(&dir).unwrap();
        let verified = output(
            &dir,
            &[
                "verify",
                "-CAfile",
                "ca.pem",
                "-verify_ip",
                "127.0.0.1",
                "-purpose",
                "sslserver",
                "server.pem",
            ],
        )
        .unwrap();
        assert!(verified.contains("server.pem: OK"), "{verified}");
        let key = std::fs::read_to_string(&files.key).unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
        assert!(
            files.description.contains("OpenSSL"),
            "{}",
            files.description
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
