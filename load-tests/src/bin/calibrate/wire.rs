//! The few Kafka requests the calibration sends by hand, on std sockets: ApiVersions (is a
//! broker answering yet?) and the SASL PLAIN exchange (connections that authenticate and then
//! sit idle, as most of a real fleet's connections do). A librdkafka client per connection
//! would cost threads and memory in this process and measure them instead.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context, Result};

const API_VERSIONS: i16 = 18;
const SASL_HANDSHAKE: i16 = 17;
const SASL_AUTHENTICATE: i16 = 36;
const CLIENT_ID: &str = "calibrate";

/// A request frame with header v1 (api key, version, correlation id, client id).
fn frame(api_key: i16, version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + CLIENT_ID.len() + body.len());
    let size = 2 + 2 + 4 + 2 + CLIENT_ID.len() + body.len();
    f.extend_from_slice(&(size as i32).to_be_bytes());
    f.extend_from_slice(&api_key.to_be_bytes());
    f.extend_from_slice(&version.to_be_bytes());
    f.extend_from_slice(&correlation_id.to_be_bytes());
    f.extend_from_slice(&(CLIENT_ID.len() as i16).to_be_bytes());
    f.extend_from_slice(CLIENT_ID.as_bytes());
    f.extend_from_slice(body);
    f
}

/// Sends `request` and reads one answer frame: the correlation id's 4 bytes, then the body.
fn exchange(stream: &mut TcpStream, request: &[u8]) -> Result<Vec<u8>> {
    stream.write_all(request)?;
    let mut size = [0u8; 4];
    stream.read_exact(&mut size)?;
    let size = i32::from_be_bytes(size);
    if !(4..=1 << 20).contains(&size) {
        bail!("answer of {size} bytes");
    }
    let mut answer = vec![0u8; size as usize];
    stream.read_exact(&mut answer)?;
    Ok(answer)
}

/// The error code that opens an answer's body (after the correlation id).
fn error_code(answer: &[u8]) -> Result<i16> {
    let code = answer.get(4..6).context("answer too short")?;
    Ok(i16::from_be_bytes([code[0], code[1]]))
}

/// Whether a Kafka broker at `addr` answers ApiVersions within `timeout`.
pub fn answers(addr: SocketAddr, timeout: Duration) -> bool {
    let ask = || -> Result<()> {
        let mut s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        exchange(&mut s, &frame(API_VERSIONS, 0, 1, &[]))?;
        Ok(())
    };
    ask().is_ok()
}

/// A connection to the gateway at `addr`, authenticated with SASL PLAIN (handshake v1,
/// authenticate v0), then left idle.
pub fn sasl_plain(addr: SocketAddr, user: &str, password: &str) -> Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut mechanism = Vec::new();
    mechanism.extend_from_slice(&5i16.to_be_bytes());
    mechanism.extend_from_slice(b"PLAIN");
    let answer = exchange(&mut s, &frame(SASL_HANDSHAKE, 1, 1, &mechanism))?;
    if error_code(&answer)? != 0 {
        bail!("SaslHandshake refused (error {})", error_code(&answer)?);
    }
    // PLAIN: authorization id (empty), NUL, user, NUL, password.
    let auth = format!("\0{user}\0{password}");
    let mut body = Vec::new();
    body.extend_from_slice(&(auth.len() as i32).to_be_bytes());
    body.extend_from_slice(auth.as_bytes());
    let answer = exchange(&mut s, &frame(SASL_AUTHENTICATE, 0, 2, &body))?;
    if error_code(&answer)? != 0 {
        bail!("SaslAuthenticate refused (error {})", error_code(&answer)?);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    #[test]
    fn frames_carry_their_size_and_header() {
        let f = super::frame(18, 3, 7, &[1, 2]);
        // size, api key, version, correlation id, client id (length, "calibrate"), body.
        assert_eq!(&f[..4], &(f.len() as i32 - 4).to_be_bytes());
        assert_eq!(&f[4..12], &[0, 18, 0, 3, 0, 0, 0, 7]);
        assert_eq!(&f[12..14], &9i16.to_be_bytes());
        assert_eq!(&f[14..23], b"calibrate");
        assert_eq!(&f[23..], &[1, 2]);
    }
}
