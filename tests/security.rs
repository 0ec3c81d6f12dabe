//! Listeners with TLS and SASL, driven by real clients and by hostile bytes.
//!
//! One broker per test with four listeners: PLAINTEXT (the harness's port), SSL, SASL_SSL and
//! SASL_PLAINTEXT, a test CA and server certificate made with `openssl` in a temp dir (never
//! committed), PLAIN users from Kafka's JAAS property and SCRAM users made through
//! AlterUserScramCredentials. Clients: librdkafka (confluent-kafka, `tests/clients/python`),
//! the Java client (kafka-tools' ProducerPerformance and ConsoleConsumer) and raw frames.

mod common;
mod rawkafka;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{free_port, request, Broker};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};

const PLAIN_JAAS: &str = r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="admin-secret" user_admin="admin-secret" user_alice="alice-secret";"#;

/// A test CA and a server certificate for 127.0.0.1/localhost, made with openssl.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    keystore: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    std::fs::write(
        d.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=shardlog-test-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    openssl(
        d,
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
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
    let mut keystore = std::fs::read(d.join("server.key")).expect("key");
    keystore.extend(std::fs::read(d.join("server.pem")).expect("cert"));
    std::fs::write(d.join("keystore.pem"), keystore).expect("keystore");
    Pki {
        ca: d.join("ca.pem"),
        keystore: d.join("keystore.pem"),
        _dir: dir,
    }
}

impl Pki {
    /// Another server certificate for 127.0.0.1/localhost from the same CA (a renewal): its
    /// keystore (key and certificate) and certificate paths.
    fn server_keystore(&self, name: &str) -> (PathBuf, PathBuf) {
        self.server_keystore_for(name, "/CN=localhost", "IP:127.0.0.1,DNS:localhost")
    }

    /// [`Pki::server_keystore`] with another subject and subject alternative names.
    fn server_keystore_for(&self, name: &str, subj: &str, san: &str) -> (PathBuf, PathBuf) {
        let d = self._dir.path();
        let ext = format!("{name}.ext");
        std::fs::write(
            d.join(&ext),
            format!(
                "subjectAltName={san}\nbasicConstraints=CA:FALSE\n\
                 keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
            ),
        )
        .expect("ext");
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                subj,
            ],
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
        let mut keystore = std::fs::read(d.join(&key)).expect("key");
        keystore.extend(std::fs::read(d.join(&pem)).expect("cert"));
        let path = d.join(format!("{name}-keystore.pem"));
        std::fs::write(&path, keystore).expect("keystore");
        (path, d.join(pem))
    }

    /// A client certificate with subject `subj` (openssl's `/K=V/...` form, most significant
    /// RDN first) signed by the test CA; (certificate, key) PEM paths.
    fn client_cert(&self, name: &str, subj: &str) -> (PathBuf, PathBuf) {
        let d = self._dir.path();
        std::fs::write(
            d.join("client.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
        )
        .expect("ext");
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                subj,
            ],
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                "client.ext",
            ],
        );
        (d.join(pem), d.join(key))
    }
}

/// A broker with PLAINTEXT (the harness port), SSL, SASL_SSL and SASL_PLAINTEXT listeners.
struct Secure {
    broker: Broker,
    ssl: u16,
    sasl_ssl: u16,
    sasl_plain: u16,
    pki: Pki,
}

impl Secure {
    fn start() -> Secure {
        let pki = pki();
        let (ssl, sasl_ssl, sasl_plain) = (free_port(), free_port(), free_port());
        let listeners = format!(
            "listeners=PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:{ssl},\
             SASL_SSL://127.0.0.1:{sasl_ssl},SASL_PLAINTEXT://127.0.0.1:{sasl_plain}"
        );
        let keystore = format!("ssl.keystore.location={}", pki.keystore.display());
        let jaas_ssl = format!("listener.name.sasl_ssl.plain.sasl.jaas.config={PLAIN_JAAS}");
        let jaas_plain =
            format!("listener.name.sasl_plaintext.plain.sasl.jaas.config={PLAIN_JAAS}");
        let broker = Broker::start(
            1,
            &[
                &listeners,
                "ssl.keystore.type=PEM",
                &keystore,
                "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
                &jaas_ssl,
                &jaas_plain,
            ],
        );
        Secure {
            broker,
            ssl,
            sasl_ssl,
            sasl_plain,
            pki,
        }
    }

    fn addr(&self, port: u16) -> String {
        format!("127.0.0.1:{port}")
    }

    /// The broker still answers ApiVersions on its plaintext listener.
    fn assert_serving(&self) {
        let mut s = TcpStream::connect(self.broker.bootstrap()).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let body = request(
            &mut s,
            ApiKey::ApiVersions,
            3,
            &ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("t"))
                .with_client_software_version(StrBytes::from_static_str("1")),
        );
        let resp = ApiVersionsResponse::decode(&mut body.clone(), 3).expect("decode");
        assert_eq!(resp.error_code, 0, "{}", self.broker.log());
    }
}

fn python() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/python/.venv/bin/python");
    assert!(
        p.exists(),
        "{} missing: run scripts/install-clients",
        p.display()
    );
    p
}

/// Runs a scenario of `security_scenarios.py`; its output, or a panic naming it.
fn librdkafka(
    scenario: &str,
    bootstrap: &str,
    tag: &str,
    args: &[String],
    broker: &Broker,
) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients/python/security_scenarios.py");
    let mut cmd = Command::new(python());
    cmd.arg(&script)
        .arg(scenario)
        .arg(bootstrap)
        .arg(tag)
        .args(args);
    let out = run_bounded(cmd, Duration::from_secs(90));
    assert!(
        out.0,
        "librdkafka {scenario} {tag} failed:\n{}\n--- broker log ---\n{}",
        out.1,
        broker.log()
    );
    out.1
}

/// Runs a command with a deadline; (succeeded, stdout+stderr).
fn run_bounded(mut cmd: Command, limit: Duration) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let (o, e) = (dir.path().join("out"), dir.path().join("err"));
    cmd.stdout(std::fs::File::create(&o).expect("out"))
        .stderr(std::fs::File::create(&e).expect("err"));
    let mut child = cmd.spawn().expect("spawn");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = format!(
        "{}{}{}",
        std::fs::read_to_string(&o).unwrap_or_default(),
        std::fs::read_to_string(&e).unwrap_or_default(),
        if status.is_none() {
            "\n(timed out)"
        } else {
            ""
        }
    );
    (status.is_some_and(|s| s.success()), text)
}

fn kv(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

#[test]
fn librdkafka_over_ssl_sasl_ssl_and_sasl_plaintext_with_plain_and_scram() {
    let mut s = Secure::start();
    let ca = s.pki.ca.display().to_string();
    let plaintext = s.broker.bootstrap();
    // SCRAM users through AlterUserScramCredentials on the plaintext listener.
    for (user, pw, mech) in [
        ("carol", "carol-secret", "SCRAM-SHA-512"),
        ("dave", "dave-secret", "SCRAM-SHA-256"),
    ] {
        librdkafka(
            "scram_upsert",
            &plaintext,
            &format!("up-{user}"),
            &[user.into(), pw.into(), mech.into()],
            &s.broker,
        );
    }
    let ssl = kv(&[("security.protocol", "SSL"), ("ssl.ca.location", &ca)]);
    librdkafka("produce_consume", &s.addr(s.ssl), "ssl", &ssl, &s.broker);
    // Large produce requests and fetch responses: many TLS records per request.
    librdkafka("bulk", &s.addr(s.ssl), "ssl-bulk", &ssl, &s.broker);
    let log = s.broker.log();
    assert!(
        !log.lines()
            .any(|l| l.contains("closing connection") && l.contains("socket: ")),
        "{log}"
    );
    let sasl_ssl = |mech: &str, user: &str, pw: &str| {
        kv(&[
            ("security.protocol", "SASL_SSL"),
            ("ssl.ca.location", &ca),
            ("sasl.mechanisms", mech),
            ("sasl.username", user),
            ("sasl.password", pw),
        ])
    };
    librdkafka(
        "produce_consume",
        &s.addr(s.sasl_ssl),
        "sasl-ssl-plain",
        &sasl_ssl("PLAIN", "alice", "alice-secret"),
        &s.broker,
    );
    librdkafka(
        "produce_consume",
        &s.addr(s.sasl_ssl),
        "sasl-ssl-scram512",
        &sasl_ssl("SCRAM-SHA-512", "carol", "carol-secret"),
        &s.broker,
    );
    let sasl_plain = kv(&[
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanisms", "SCRAM-SHA-256"),
        ("sasl.username", "dave"),
        ("sasl.password", "dave-secret"),
    ]);
    librdkafka(
        "produce_consume",
        &s.addr(s.sasl_plain),
        "sasl-plaintext-scram256",
        &sasl_plain,
        &s.broker,
    );
    // Wrong passwords: an authentication error, for PLAIN and SCRAM.
    for (mech, user) in [("PLAIN", "alice"), ("SCRAM-SHA-512", "carol")] {
        let out = librdkafka(
            "auth_fails",
            &s.addr(s.sasl_ssl),
            &format!("wrong-{user}"),
            &sasl_ssl(mech, user, "not-the-password"),
            &s.broker,
        );
        assert!(out.contains("uthentication"), "{out}");
    }
    let log = s.broker.log();
    assert!(
        log.contains("request refused") && log.contains("SaslAuthenticate"),
        "{log}"
    );
    // The SCRAM credentials survive a crash (the store was durable before the answer).
    s.broker.kill9();
    s.broker.restart();
    librdkafka(
        "produce_consume",
        &s.addr(s.sasl_ssl),
        "after-restart",
        &sasl_ssl("SCRAM-SHA-512", "carol", "carol-secret"),
        &s.broker,
    );
    s.assert_serving();
}

/// `java -cp <kafka-tools classpath> <class> <args>`; (succeeded, output).
fn java_tool(class: &str, args: &[String]) -> (bool, String) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let jar = root.join("tests/clients/java/target/shardlog-clients.jar");
    assert!(
        jar.exists(),
        "{} missing: run scripts/install-clients",
        jar.display()
    );
    let cp = format!(
        "{}:{}/*",
        jar.display(),
        root.join("tests/clients/java/target/lib").display()
    );
    let mut cmd = Command::new("java");
    cmd.args(["-XX:TieredStopAtLevel=1", "-Xshare:auto", "-cp", &cp, class])
        .args(args);
    run_bounded(cmd, Duration::from_secs(120))
}

#[test]
fn java_client_produces_and_consumes_over_sasl_ssl_with_plain_and_scram_sha_512() {
    let s = Secure::start();
    librdkafka(
        "scram_upsert",
        &s.broker.bootstrap(),
        "up-java",
        &["erin".into(), "erin-secret".into(), "SCRAM-SHA-512".into()],
        &s.broker,
    );
    let dir = tempfile::tempdir().expect("tmp");
    for (mech, module, user, pw) in [
        (
            "PLAIN",
            "org.apache.kafka.common.security.plain.PlainLoginModule",
            "alice",
            "alice-secret",
        ),
        (
            "SCRAM-SHA-512",
            "org.apache.kafka.common.security.scram.ScramLoginModule",
            "erin",
            "erin-secret",
        ),
    ] {
        let props = dir.path().join(format!("{mech}.properties"));
        std::fs::write(
            &props,
            format!(
                "security.protocol=SASL_SSL\nsasl.mechanism={mech}\n\
                 sasl.jaas.config={module} required username=\"{user}\" password=\"{pw}\";\n\
                 ssl.truststore.type=PEM\nssl.truststore.location={}\n",
                s.pki.ca.display()
            ),
        )
        .expect("props");
        let topic = format!("java-{}", mech.to_lowercase());
        let bootstrap = s.addr(s.sasl_ssl);
        let (ok, out) = java_tool(
            "org.apache.kafka.tools.ProducerPerformance",
            &[
                "--topic".into(),
                topic.clone(),
                "--num-records".into(),
                "200".into(),
                "--record-size".into(),
                "100".into(),
                "--throughput".into(),
                "-1".into(),
                "--producer-props".into(),
                format!("bootstrap.servers={bootstrap}"),
                "acks=all".into(),
                "--producer.config".into(),
                props.display().to_string(),
            ],
        );
        assert!(
            ok && out.contains("200 records sent"),
            "{mech} produce:\n{out}\n{}",
            s.broker.log()
        );
        let (ok, out) = java_tool(
            "org.apache.kafka.tools.consumer.ConsoleConsumer",
            &[
                "--bootstrap-server".into(),
                bootstrap,
                "--topic".into(),
                topic,
                "--from-beginning".into(),
                "--max-messages".into(),
                "200".into(),
                "--timeout-ms".into(),
                "30000".into(),
                "--consumer.config".into(),
                props.display().to_string(),
            ],
        );
        assert!(
            ok && out.contains("Processed a total of 200 messages"),
            "{mech} consume:\n{out}\n{}",
            s.broker.log()
        );
    }
}

#[test]
fn franz_go_produces_and_consumes_over_sasl_ssl_with_plain_and_scram_sha_512() {
    let s = Secure::start();
    librdkafka(
        "scram_upsert",
        &s.broker.bootstrap(),
        "up-franz",
        &[
            "frank".into(),
            "frank-secret".into(),
            "SCRAM-SHA-512".into(),
        ],
        &s.broker,
    );
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/go/bin/security");
    assert!(
        bin.exists(),
        "{} missing: run scripts/install-clients",
        bin.display()
    );
    for (mech, user, pw) in [
        ("PLAIN", "alice", "alice-secret"),
        ("SCRAM-SHA-512", "frank", "frank-secret"),
    ] {
        let mut cmd = Command::new(&bin);
        cmd.args([
            "produce_consume",
            &s.addr(s.sasl_ssl),
            &format!("franz-{}", mech.to_lowercase()),
            &s.pki.ca.display().to_string(),
            mech,
            user,
            pw,
        ]);
        let (ok, out) = run_bounded(cmd, Duration::from_secs(60));
        assert!(ok, "franz-go {mech}:\n{out}\n{}", s.broker.log());
    }
}

/// Writes `bytes` to a fresh connection to `port` and reads until the broker closes it (or 10
/// s pass); true when it closed.
fn closed_after(port: u16, bytes: &[u8]) -> bool {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(12)))
        .expect("timeout");
    let _ = c.write_all(bytes);
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(12);
    while Instant::now() < deadline {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an alert or a response before the close
            // Timed out: still open. Any other error: reset by the broker's close.
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
    false
}

/// A raw request frame: header v1/v2 as the API needs, then the body.
fn frame<R: kafka_protocol::protocol::Encodable>(key: ApiKey, version: i16, body: &R) -> Vec<u8> {
    use kafka_protocol::protocol::Encodable;
    let mut buf = bytes::BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("hostile")))
        .encode(&mut buf, key.request_header_version(version))
        .expect("header");
    body.encode(&mut buf, version).expect("body");
    let mut out = (buf.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&buf);
    out
}

fn handshake(s: &mut TcpStream, mechanism: &'static str) -> SaslHandshakeResponse {
    let body = request(
        s,
        ApiKey::SaslHandshake,
        1,
        &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism)),
    );
    SaslHandshakeResponse::decode(&mut body.clone(), 1).expect("handshake response")
}

fn authenticate(s: &mut TcpStream, token: &[u8]) -> SaslAuthenticateResponse {
    let body = request(
        s,
        ApiKey::SaslAuthenticate,
        2,
        &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::copy_from_slice(token)),
    );
    SaslAuthenticateResponse::decode(&mut body.clone(), 2).expect("authenticate response")
}

fn is_closed(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

#[test]
fn hostile_tls_and_sasl_input_closes_only_that_connection() {
    let s = Secure::start();
    let api_versions = frame(
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("t"))
            .with_client_software_version(StrBytes::from_static_str("1")),
    );
    // A plaintext Kafka client on a TLS port: refused (an alert) and closed.
    assert!(closed_after(s.ssl, &api_versions));
    assert!(closed_after(s.sasl_ssl, &api_versions));
    s.assert_serving();
    // A TLS ClientHello on the plaintext port: closed, and the log says why.
    let hello: Vec<u8> = {
        let mut h = vec![
            0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03, 0x03,
        ];
        h.extend_from_slice(&[0xab; 32]);
        h
    };
    assert!(closed_after(s.broker.port, &hello));
    assert!(closed_after(s.sasl_plain, &hello));
    // A truncated ClientHello, then silence: closed by the handshake timeout.
    let started = Instant::now();
    assert!(closed_after(s.ssl, &hello[..20]));
    assert!(started.elapsed() < Duration::from_secs(12));
    // Garbage that is not TLS at all.
    assert!(closed_after(s.sasl_ssl, &[0xff; 64]));
    s.assert_serving();

    // SASL_PLAINTEXT: anything but the SASL exchange before authentication closes.
    let metadata = frame(ApiKey::Metadata, 12, &MetadataRequest::default());
    assert!(closed_after(s.sasl_plain, &metadata));
    // An oversized request before authentication (sasl.server.max.receive.size).
    let mut big = (600 * 1024i32).to_be_bytes().to_vec();
    big.extend_from_slice(&[0u8; 1024]);
    assert!(closed_after(s.sasl_plain, &big));
    // An oversized SCRAM token within the limit: refused, answered, closed.
    let mut c = TcpStream::connect(s.addr(s.sasl_plain)).expect("connect");
    assert_eq!(handshake(&mut c, "SCRAM-SHA-512").error_code, 0);
    let r = authenticate(&mut c, &vec![b'x'; 400 * 1024]);
    assert_eq!(r.error_code, 58, "SASL_AUTHENTICATION_FAILED");
    assert!(is_closed(&mut c));
    // Malformed SCRAM messages.
    for bad in [
        &b"n,,n=carol"[..],
        b"p=tls-server-end-point,,n=carol,r=abc",
        b"\xff\xfe\xfd",
        b"n,,n=a=b,r=abc",
        b"",
    ] {
        let mut c = TcpStream::connect(s.addr(s.sasl_plain)).expect("connect");
        assert_eq!(handshake(&mut c, "SCRAM-SHA-256").error_code, 0);
        let r = authenticate(&mut c, bad);
        assert_eq!(r.error_code, 58, "{bad:?}");
        assert!(is_closed(&mut c), "{bad:?}");
    }
    // A mechanism not enabled: UNSUPPORTED_SASL_MECHANISM with the enabled ones, then closed.
    let mut c = TcpStream::connect(s.addr(s.sasl_plain)).expect("connect");
    let r = handshake(&mut c, "GSSAPI");
    assert_eq!(r.error_code, 33, "UNSUPPORTED_SASL_MECHANISM");
    assert_eq!(r.mechanisms.len(), 3);
    assert!(is_closed(&mut c));
    // A wrong PLAIN password: SASL_AUTHENTICATION_FAILED, and nothing else is served.
    let mut c = TcpStream::connect(s.addr(s.sasl_plain)).expect("connect");
    assert_eq!(handshake(&mut c, "PLAIN").error_code, 0);
    let r = authenticate(&mut c, b"\0alice\0wrong");
    assert_eq!(r.error_code, 58);
    assert!(r.error_message.is_some());
    assert!(is_closed(&mut c));
    // The right one: then Metadata is served, with this listener's address.
    let mut c = TcpStream::connect(s.addr(s.sasl_plain)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    assert_eq!(handshake(&mut c, "PLAIN").error_code, 0);
    assert_eq!(authenticate(&mut c, b"\0alice\0alice-secret").error_code, 0);
    let body = request(&mut c, ApiKey::Metadata, 12, &MetadataRequest::default());
    let md = MetadataResponse::decode(&mut body.clone(), 12).expect("metadata");
    assert_eq!(md.brokers.len(), 1);
    assert_eq!(md.brokers[0].port, s.sasl_plain as i32);
    // A second handshake after authentication: ILLEGAL_SASL_STATE, connection kept.
    assert_eq!(handshake(&mut c, "PLAIN").error_code, 34);
    let body = request(&mut c, ApiKey::Metadata, 12, &MetadataRequest::default());
    assert!(MetadataResponse::decode(&mut body.clone(), 12).is_ok());
    s.assert_serving();
    let log = s.broker.log();
    assert!(log.contains("TLS handshake failed"), "{log}");
    assert!(
        log.contains("a TLS handshake on PLAINTEXT listener"),
        "{log}"
    );
    assert!(log.contains("during SASL handshake"), "{log}");
}

#[test]
fn bad_security_settings_stop_the_start_with_the_property_named() {
    for (extra, expect) in [
        (
            vec!["listeners=PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:1".to_string()],
            "ssl.keystore.location",
        ),
        (
            vec!["listeners=PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:1".to_string()],
            "sasl.enabled.mechanisms",
        ),
        (
            vec!["listeners=PLAINTEXT://127.0.0.1:0,EXTERNAL://127.0.0.1:1".to_string()],
            "listener.security.protocol.map",
        ),
    ] {
        let dir = common::temp_data_dir();
        let out = Command::new(env!("CARGO_BIN_EXE_shardlog"))
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--cores")
            .arg("1")
            .args(extra.iter().flat_map(|e| ["--set".to_string(), e.clone()]))
            .output()
            .expect("run");
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} started");
        assert!(text.contains(expect), "{extra:?}: {text}");
    }
}

/// `kafka-acls` (AclCommand) with the admin's SASL settings; its output.
fn kafka_acls(bootstrap: &str, admin_props: &Path, args: &[&str], broker: &Broker) -> String {
    let mut all: Vec<String> = vec![
        "--bootstrap-server".into(),
        bootstrap.into(),
        "--command-config".into(),
        admin_props.display().to_string(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let (ok, out) = java_tool("org.apache.kafka.tools.AclCommand", &all);
    assert!(ok, "kafka-acls {args:?}:\n{out}\n{}", broker.log());
    out
}

#[test]
fn acls_allow_one_topic_and_deny_another_and_kafka_acls_changes_them_live() {
    let sasl_plain = free_port();
    let listeners =
        format!("listeners=PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:{sasl_plain}");
    let jaas = format!("listener.name.sasl_plaintext.plain.sasl.jaas.config={PLAIN_JAAS}");
    let broker = Broker::start(
        1,
        &[
            &listeners,
            "sasl.enabled.mechanisms=PLAIN",
            &jaas,
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users=User:admin",
        ],
    );
    let bootstrap = format!("127.0.0.1:{sasl_plain}");
    let who = |user: &str, pw: &str| {
        kv(&[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanisms", "PLAIN"),
            ("sasl.username", user),
            ("sasl.password", pw),
        ])
    };
    let admin = who("admin", "admin-secret");
    let alice = who("alice", "alice-secret");
    // The super user writes both topics (t-acl-a, t-acl-b).
    for tag in ["acl-a", "acl-b"] {
        librdkafka("produce_consume", &bootstrap, tag, &admin, &broker);
    }
    let dir = tempfile::tempdir().expect("tmp");
    let props = dir.path().join("admin.properties");
    std::fs::write(
        &props,
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.jaas.config=\
         org.apache.kafka.common.security.plain.PlainLoginModule required \
         username=\"admin\" password=\"admin-secret\";\n",
    )
    .expect("props");
    // As in Kafka, a consumer's group needs READ (its FindCoordinator DESCRIBE) too.
    let groups = [
        "--add",
        "--allow-principal",
        "User:alice",
        "--operation",
        "Read",
        "--group",
        "g-acl-",
        "--resource-pattern-type",
        "prefixed",
    ];
    kafka_acls(&bootstrap, &props, &groups, &broker);
    // No topic ACL yet: alice may read neither.
    librdkafka("consume_denied", &bootstrap, "acl-a", &alice, &broker);
    let rule = [
        "--allow-principal",
        "User:alice",
        "--operation",
        "Read",
        "--topic",
        "t-acl-a",
    ];
    let mut add = vec!["--add"];
    add.extend(rule);
    kafka_acls(&bootstrap, &props, &add, &broker);
    let listed = kafka_acls(
        &bootstrap,
        &props,
        &["--list", "--topic", "t-acl-a"],
        &broker,
    );
    assert!(
        listed.contains("User:alice") && listed.contains("READ") && listed.contains("ALLOW"),
        "{listed}"
    );
    // alice reads A, and gets TOPIC_AUTHORIZATION_FAILED for B.
    librdkafka(
        "consume",
        &bootstrap,
        "acl-a",
        &[vec!["20".to_string()], alice.clone()].concat(),
        &broker,
    );
    librdkafka("consume_denied", &bootstrap, "acl-b", &alice, &broker);
    // The ACLs survive a restart (kept durably), then the rule is removed live.
    let mut broker = broker;
    broker.kill9();
    broker.restart();
    librdkafka(
        "consume",
        &bootstrap,
        "acl-a",
        &[vec!["20".to_string()], alice.clone()].concat(),
        &broker,
    );
    let mut remove = vec!["--remove", "--force"];
    remove.extend(rule);
    kafka_acls(&bootstrap, &props, &remove, &broker);
    librdkafka("consume_denied", &bootstrap, "acl-a", &alice, &broker);
    let log = broker.log();
    assert!(
        log.contains("User:alice is Denied operation = DESCRIBE"),
        "{log}"
    );
}

/// Authenticates a raw connection on a SASL_PLAINTEXT port with PLAIN.
fn plain_login(port: u16, user: &str, pw: &str) -> TcpStream {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    assert_eq!(handshake(&mut c, "PLAIN").error_code, 0);
    let token = format!("\0{user}\0{pw}");
    assert_eq!(authenticate(&mut c, token.as_bytes()).error_code, 0);
    c
}

#[test]
fn every_checked_api_answers_its_authorization_error() {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
    const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
    let sasl_plain = free_port();
    let listeners =
        format!("listeners=PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:{sasl_plain}");
    let jaas = format!("listener.name.sasl_plaintext.plain.sasl.jaas.config={PLAIN_JAAS}");
    let _broker = Broker::start(
        1,
        &[
            &listeners,
            "sasl.enabled.mechanisms=PLAIN",
            &jaas,
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users=User:admin",
            "auto.create.topics.enable=false",
        ],
    );
    let topic = || TopicName(StrBytes::from_static_str("secret"));
    let mut admin = plain_login(sasl_plain, "admin", "admin-secret");
    let body = request(
        &mut admin,
        ApiKey::CreateTopics,
        7,
        &CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic())
                .with_num_partitions(1)
                .with_replication_factor(1)])
            .with_timeout_ms(10_000),
    );
    let created = CreateTopicsResponse::decode(&mut body.clone(), 7).expect("create");
    assert_eq!(created.topics[0].error_code, 0, "{created:?}");

    let mut alice = plain_login(sasl_plain, "alice", "alice-secret");
    // Produce: an empty v2 batch is enough, authorization comes first.
    let body = request(
        &mut alice,
        ApiKey::Produce,
        9,
        &ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic())
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(Bytes::from_static(&[0u8; 61])))])]),
    );
    let p = ProduceResponse::decode(&mut body.clone(), 9).expect("produce");
    assert_eq!(
        p.responses[0].partition_responses[0].error_code,
        TOPIC_AUTHORIZATION_FAILED
    );
    let body = request(
        &mut alice,
        ApiKey::Fetch,
        12,
        &FetchRequest::default()
            .with_max_wait_ms(10)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic())
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_partition_max_bytes(1 << 20)])]),
    );
    let f = FetchResponse::decode(&mut body.clone(), 12).expect("fetch");
    assert_eq!(
        f.responses[0].partitions[0].error_code,
        TOPIC_AUTHORIZATION_FAILED
    );
    let body = request(
        &mut alice,
        ApiKey::ListOffsets,
        7,
        &ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic())
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-1)])]),
    );
    let l = ListOffsetsResponse::decode(&mut body.clone(), 7).expect("list offsets");
    assert_eq!(
        l.topics[0].partitions[0].error_code,
        TOPIC_AUTHORIZATION_FAILED
    );
    // Admin: CreateTopics needs CREATE (cluster or topic), DeleteTopics DELETE and
    // CreatePartitions ALTER on the topic; nothing changes.
    let body = request(
        &mut alice,
        ApiKey::CreateTopics,
        7,
        &CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("alice-new")))
                .with_num_partitions(1)
                .with_replication_factor(1)])
            .with_timeout_ms(10_000),
    );
    let c = CreateTopicsResponse::decode(&mut body.clone(), 7).expect("create");
    assert_eq!(c.topics[0].error_code, TOPIC_AUTHORIZATION_FAILED, "{c:?}");
    let body = request(
        &mut alice,
        ApiKey::DeleteTopics,
        5,
        &DeleteTopicsRequest::default()
            .with_topic_names(vec![topic()])
            .with_timeout_ms(10_000),
    );
    let d = DeleteTopicsResponse::decode(&mut body.clone(), 5).expect("delete");
    assert_eq!(
        d.responses[0].error_code, TOPIC_AUTHORIZATION_FAILED,
        "{d:?}"
    );
    let body = request(
        &mut alice,
        ApiKey::CreatePartitions,
        3,
        &CreatePartitionsRequest::default()
            .with_topics(vec![
                kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic::default()
                    .with_name(topic())
                    .with_count(4),
            ])
            .with_timeout_ms(10_000),
    );
    let cp = CreatePartitionsResponse::decode(&mut body.clone(), 3).expect("create partitions");
    assert_eq!(
        cp.results[0].error_code, TOPIC_AUTHORIZATION_FAILED,
        "{cp:?}"
    );
    let body = request(
        &mut admin,
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(None),
    );
    let m = MetadataResponse::decode(&mut body.clone(), 12).expect("metadata");
    let names: Vec<(String, usize)> = m
        .topics
        .iter()
        .map(|t| {
            (
                t.name.as_ref().map(|n| n.to_string()).unwrap_or_default(),
                t.partitions.len(),
            )
        })
        .collect();
    assert!(names.contains(&("secret".to_string(), 1)), "{names:?}");
    assert!(!names.iter().any(|(n, _)| n == "alice-new"), "{names:?}");
    // Metadata: named → TOPIC_AUTHORIZATION_FAILED; all topics → left out.
    let body = request(
        &mut alice,
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(Some(vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(topic())),
        ])),
    );
    let m = MetadataResponse::decode(&mut body.clone(), 12).expect("metadata");
    assert_eq!(m.topics[0].error_code, TOPIC_AUTHORIZATION_FAILED);
    let everything = MetadataRequest::default().with_topics(None);
    let body = request(&mut alice, ApiKey::Metadata, 12, &everything);
    let m = MetadataResponse::decode(&mut body.clone(), 12).expect("metadata");
    assert!(m.topics.is_empty(), "{:?}", m.topics);
    // Groups: JoinGroup (READ) and OffsetFetch (DESCRIBE) → GROUP_AUTHORIZATION_FAILED.
    const GROUP_AUTHORIZATION_FAILED: i16 = 30;
    let body = request(
        &mut alice,
        ApiKey::JoinGroup,
        9,
        &JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g-secret")))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_protocol_type(StrBytes::from_static_str("consumer")),
    );
    let j = JoinGroupResponse::decode(&mut body.clone(), 9).expect("join");
    assert_eq!(j.error_code, GROUP_AUTHORIZATION_FAILED);
    let body = request(
        &mut alice,
        ApiKey::OffsetFetch,
        7,
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g-secret")))
            .with_topics(None),
    );
    let o = OffsetFetchResponse::decode(&mut body.clone(), 7).expect("offset fetch");
    assert_eq!(o.error_code, GROUP_AUTHORIZATION_FAILED);
    // Cluster-level: ACLs and SCRAM credentials.
    let body = request(
        &mut alice,
        ApiKey::DescribeAcls,
        3,
        &DescribeAclsRequest::default()
            .with_resource_type_filter(1)
            .with_pattern_type_filter(1)
            .with_operation(1)
            .with_permission_type(1),
    );
    let d = DescribeAclsResponse::decode(&mut body.clone(), 3).expect("describe acls");
    assert_eq!(d.error_code, CLUSTER_AUTHORIZATION_FAILED);
    let body = request(
        &mut alice,
        ApiKey::DescribeUserScramCredentials,
        0,
        &DescribeUserScramCredentialsRequest::default(),
    );
    let d = DescribeUserScramCredentialsResponse::decode(&mut body.clone(), 0).expect("describe");
    assert_eq!(d.error_code, CLUSTER_AUTHORIZATION_FAILED);
    // The super user is allowed all of it.
    let body = request(&mut admin, ApiKey::Metadata, 12, &everything);
    let m = MetadataResponse::decode(&mut body.clone(), 12).expect("metadata");
    assert!(m.topics.iter().any(|t| t.error_code == 0), "{:?}", m.topics);
    let body = request(
        &mut admin,
        ApiKey::DescribeAcls,
        3,
        &DescribeAclsRequest::default()
            .with_resource_type_filter(1)
            .with_pattern_type_filter(1)
            .with_operation(1)
            .with_permission_type(1),
    );
    let d = DescribeAclsResponse::decode(&mut body.clone(), 3).expect("describe acls");
    assert_eq!(d.error_code, 0);
}

#[test]
fn acl_requests_without_an_authorizer_answer_security_disabled() {
    const SECURITY_DISABLED: i16 = 54;
    let broker = Broker::start(1, &[]);
    let mut c = TcpStream::connect(broker.bootstrap()).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let body = request(
        &mut c,
        ApiKey::CreateAcls,
        3,
        &CreateAclsRequest::default().with_creations(vec![
            kafka_protocol::messages::create_acls_request::AclCreation::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("t"))
                .with_resource_pattern_type(3)
                .with_principal(StrBytes::from_static_str("User:alice"))
                .with_host(StrBytes::from_static_str("*"))
                .with_operation(3)
                .with_permission_type(3),
        ]),
    );
    let r = CreateAclsResponse::decode(&mut body.clone(), 3).expect("create acls");
    assert_eq!(r.results[0].error_code, SECURITY_DISABLED);
}

/// A broker with the authorizer on (super user `admin`, no auto-created topics) and a
/// SASL_PLAINTEXT listener with PLAIN users admin and alice; (broker, SASL port).
fn authorizing_broker() -> (Broker, u16) {
    let sasl_plain = free_port();
    let listeners =
        format!("listeners=PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:{sasl_plain}");
    let jaas = format!("listener.name.sasl_plaintext.plain.sasl.jaas.config={PLAIN_JAAS}");
    let broker = Broker::start(
        1,
        &[
            &listeners,
            "sasl.enabled.mechanisms=PLAIN",
            &jaas,
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users=User:admin",
            "auto.create.topics.enable=false",
        ],
    );
    (broker, sasl_plain)
}

/// One request and its decoded response at `version`.
fn call<Req: kafka_protocol::protocol::Encodable, Resp: Decodable + std::fmt::Debug>(
    s: &mut TcpStream,
    key: ApiKey,
    version: i16,
    req: &Req,
) -> Resp {
    let body = request(s, key, version, req);
    Resp::decode(&mut body.clone(), version).unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"))
}

/// Three plain records (no producer id).
fn plain_batch() -> Bytes {
    rawkafka::encode_batch(&[
        Bytes::from_static(b"v0"),
        Bytes::from_static(b"v1"),
        Bytes::from_static(b"v2"),
    ])
}

/// (log start offset, high watermark) of `topic`-0, asked by `s`.
fn offsets_of(s: &mut TcpStream, topic: &str) -> (i64, i64) {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let at = |s: &mut TcpStream, ts: i64| {
        let l: ListOffsetsResponse = call(
            s,
            ApiKey::ListOffsets,
            7,
            &ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(ts)])]),
        );
        assert_eq!(l.topics[0].partitions[0].error_code, 0, "{l:?}");
        l.topics[0].partitions[0].offset
    };
    (at(s, -2), at(s, -1))
}

#[test]
fn admin_group_and_transactional_apis_answer_their_authorization_errors() {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    const TOPIC_DENIED: i16 = 29;
    const GROUP_DENIED: i16 = 30;
    const CLUSTER_DENIED: i16 = 31;
    const TXN_ID_DENIED: i16 = 53;
    let (broker, port) = authorizing_broker();
    let name = || TopicName(StrBytes::from_static_str("secret"));
    let s = |v: &'static str| StrBytes::from_static_str(v);
    let mut admin = plain_login(port, "admin", "admin-secret");
    let created: CreateTopicsResponse = call(
        &mut admin,
        ApiKey::CreateTopics,
        7,
        &CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(name())
                .with_num_partitions(1)
                .with_replication_factor(1)])
            .with_timeout_ms(10_000),
    );
    assert_eq!(created.topics[0].error_code, 0, "{created:?}");
    let produced: ProduceResponse = call(
        &mut admin,
        ApiKey::Produce,
        9,
        &ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(name())
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(plain_batch()))])]),
    );
    assert_eq!(produced.responses[0].partition_responses[0].error_code, 0);
    // The admin's group with a committed offset, and a transactional id of the admin's.
    let committed: OffsetCommitResponse = call(
        &mut admin,
        ApiKey::OffsetCommit,
        8,
        &OffsetCommitRequest::default()
            .with_group_id(GroupId(s("g-admin")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![
                kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(name())
                    .with_partitions(vec![
                        kafka_protocol::messages::offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(2),
                    ]),
            ]),
    );
    assert_eq!(
        committed.topics[0].partitions[0].error_code, 0,
        "{committed:?}"
    );
    let init: InitProducerIdResponse = call(
        &mut admin,
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(s("tx-admin"))))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    );
    assert_eq!(init.error_code, 0, "{init:?}");

    let mut alice = plain_login(port, "alice", "alice-secret");
    // Configs: DESCRIBE_CONFIGS / ALTER_CONFIGS on the topic, or on the cluster for a broker.
    let d: DescribeConfigsResponse = call(
        &mut alice,
        ApiKey::DescribeConfigs,
        4,
        &DescribeConfigsRequest::default().with_resources(vec![
            kafka_protocol::messages::describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("secret")),
            kafka_protocol::messages::describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(s("1")),
        ]),
    );
    assert_eq!(d.results[0].error_code, TOPIC_DENIED, "{d:?}");
    assert!(d.results[0].configs.is_empty());
    assert_eq!(d.results[1].error_code, CLUSTER_DENIED, "{d:?}");
    let ia: IncrementalAlterConfigsResponse = call(
        &mut alice,
        ApiKey::IncrementalAlterConfigs,
        1,
        &IncrementalAlterConfigsRequest::default().with_resources(vec![
            kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("secret"))
                .with_configs(vec![
                    kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig::default()
                        .with_name(s("retention.ms"))
                        .with_config_operation(0)
                        .with_value(Some(s("1"))),
                ]),
        ]),
    );
    assert_eq!(ia.responses[0].error_code, TOPIC_DENIED, "{ia:?}");
    let a: AlterConfigsResponse = call(
        &mut alice,
        ApiKey::AlterConfigs,
        2,
        &AlterConfigsRequest::default().with_resources(vec![
            kafka_protocol::messages::alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("secret"))
                .with_configs(vec![
                    kafka_protocol::messages::alter_configs_request::AlterableConfig::default()
                        .with_name(s("retention.ms"))
                        .with_value(Some(s("1"))),
                ]),
        ]),
    );
    assert_eq!(a.responses[0].error_code, TOPIC_DENIED, "{a:?}");
    // FindCoordinator: DESCRIBE on the group / the transactional id, per key.
    let f: FindCoordinatorResponse = call(
        &mut alice,
        ApiKey::FindCoordinator,
        4,
        &FindCoordinatorRequest::default()
            .with_key_type(0)
            .with_coordinator_keys(vec![s("g-admin")]),
    );
    assert_eq!(f.coordinators[0].error_code, GROUP_DENIED, "{f:?}");
    let f: FindCoordinatorResponse = call(
        &mut alice,
        ApiKey::FindCoordinator,
        4,
        &FindCoordinatorRequest::default()
            .with_key_type(1)
            .with_coordinator_keys(vec![s("tx-admin")]),
    );
    assert_eq!(f.coordinators[0].error_code, TXN_ID_DENIED, "{f:?}");
    // InitProducerId: WRITE on the transactional id; an idempotent producer needs
    // IDEMPOTENT_WRITE on the cluster or WRITE on some topic.
    let init_req = |id: Option<&'static str>| {
        InitProducerIdRequest::default()
            .with_transactional_id(id.map(|i| TransactionalId(s(i))))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    let i: InitProducerIdResponse = call(
        &mut alice,
        ApiKey::InitProducerId,
        4,
        &init_req(Some("tx-admin")),
    );
    assert_eq!(i.error_code, TXN_ID_DENIED, "{i:?}");
    let i: InitProducerIdResponse = call(&mut alice, ApiKey::InitProducerId, 4, &init_req(None));
    assert_eq!(i.error_code, CLUSTER_DENIED, "{i:?}");
    // The transaction APIs: WRITE on the transactional id.
    let pid = init.producer_id;
    let ap: AddPartitionsToTxnResponse = call(
        &mut alice,
        ApiKey::AddPartitionsToTxn,
        3,
        &AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(s("tx-admin")))
            .with_v3_and_below_producer_id(pid)
            .with_v3_and_below_producer_epoch(init.producer_epoch)
            .with_v3_and_below_topics(vec![
                kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                    .with_name(name())
                    .with_partitions(vec![0]),
            ]),
    );
    assert_eq!(
        ap.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
        TXN_ID_DENIED,
        "{ap:?}"
    );
    let ao: AddOffsetsToTxnResponse = call(
        &mut alice,
        ApiKey::AddOffsetsToTxn,
        3,
        &AddOffsetsToTxnRequest::default()
            .with_transactional_id(TransactionalId(s("tx-admin")))
            .with_producer_id(pid)
            .with_producer_epoch(init.producer_epoch)
            .with_group_id(GroupId(s("g-admin"))),
    );
    assert_eq!(ao.error_code, TXN_ID_DENIED, "{ao:?}");
    let tc: TxnOffsetCommitResponse = call(
        &mut alice,
        ApiKey::TxnOffsetCommit,
        3,
        &TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId(s("tx-admin")))
            .with_group_id(GroupId(s("g-admin")))
            .with_producer_id(pid)
            .with_producer_epoch(init.producer_epoch)
            .with_generation_id(-1)
            .with_topics(vec![
                kafka_protocol::messages::txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                    .with_name(name())
                    .with_partitions(vec![
                        kafka_protocol::messages::txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(3),
                    ]),
            ]),
    );
    assert_eq!(
        tc.topics[0].partitions[0].error_code, TXN_ID_DENIED,
        "{tc:?}"
    );
    let e: EndTxnResponse = call(
        &mut alice,
        ApiKey::EndTxn,
        3,
        &EndTxnRequest::default()
            .with_transactional_id(TransactionalId(s("tx-admin")))
            .with_producer_id(pid)
            .with_producer_epoch(init.producer_epoch)
            .with_committed(false),
    );
    assert_eq!(e.error_code, TXN_ID_DENIED, "{e:?}");
    let w: WriteTxnMarkersResponse = call(
        &mut alice,
        ApiKey::WriteTxnMarkers,
        1,
        &WriteTxnMarkersRequest::default().with_markers(vec![
            kafka_protocol::messages::write_txn_markers_request::WritableTxnMarker::default()
                .with_producer_id(pid)
                .with_producer_epoch(init.producer_epoch)
                .with_transaction_result(false)
                .with_coordinator_epoch(0)
                .with_topics(vec![
                    kafka_protocol::messages::write_txn_markers_request::WritableTxnMarkerTopic::default()
                        .with_name(name())
                        .with_partition_indexes(vec![0]),
                ]),
        ]),
    );
    assert_eq!(
        w.markers[0].topics[0].partitions[0].error_code, CLUSTER_DENIED,
        "{w:?}"
    );
    let dt: DescribeTransactionsResponse = call(
        &mut alice,
        ApiKey::DescribeTransactions,
        0,
        &DescribeTransactionsRequest::default()
            .with_transactional_ids(vec![TransactionalId(s("tx-admin"))]),
    );
    assert_eq!(dt.transaction_states[0].error_code, TXN_ID_DENIED, "{dt:?}");
    let listed = |c: &mut TcpStream| -> Vec<String> {
        let l: ListTransactionsResponse = call(
            c,
            ApiKey::ListTransactions,
            0,
            &ListTransactionsRequest::default(),
        );
        assert_eq!(l.error_code, 0);
        l.transaction_states
            .iter()
            .map(|t| t.transactional_id.to_string())
            .collect()
    };
    assert!(listed(&mut alice).is_empty());
    assert_eq!(listed(&mut admin), vec!["tx-admin".to_string()]);
    let dp: DescribeProducersResponse = call(
        &mut alice,
        ApiKey::DescribeProducers,
        0,
        &DescribeProducersRequest::default().with_topics(vec![
            kafka_protocol::messages::describe_producers_request::TopicRequest::default()
                .with_name(name())
                .with_partition_indexes(vec![0]),
        ]),
    );
    assert_eq!(
        dp.topics[0].partitions[0].error_code, TOPIC_DENIED,
        "{dp:?}"
    );
    // A transactional produce: WRITE on the transactional id comes first.
    let p: ProduceResponse = call(
        &mut alice,
        ApiKey::Produce,
        9,
        &ProduceRequest::default()
            .with_transactional_id(Some(TransactionalId(s("tx-admin"))))
            .with_acks(-1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(name())
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(plain_batch()))])]),
    );
    assert_eq!(
        p.responses[0].partition_responses[0].error_code,
        TXN_ID_DENIED
    );
    // DeleteRecords (DELETE on the topic) and the group APIs.
    let dr: DeleteRecordsResponse = call(
        &mut alice,
        ApiKey::DeleteRecords,
        2,
        &DeleteRecordsRequest::default()
            .with_timeout_ms(5000)
            .with_topics(vec![
                kafka_protocol::messages::delete_records_request::DeleteRecordsTopic::default()
                    .with_name(name())
                    .with_partitions(vec![
                        kafka_protocol::messages::delete_records_request::DeleteRecordsPartition::default()
                            .with_partition_index(0)
                            .with_offset(2),
                    ]),
            ]),
    );
    assert_eq!(
        dr.topics[0].partitions[0].error_code, TOPIC_DENIED,
        "{dr:?}"
    );
    let dg: DeleteGroupsResponse = call(
        &mut alice,
        ApiKey::DeleteGroups,
        2,
        &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("g-admin"))]),
    );
    assert_eq!(dg.results[0].error_code, GROUP_DENIED, "{dg:?}");
    let od: OffsetDeleteResponse = call(
        &mut alice,
        ApiKey::OffsetDelete,
        0,
        &OffsetDeleteRequest::default()
            .with_group_id(GroupId(s("g-admin")))
            .with_topics(vec![
                kafka_protocol::messages::offset_delete_request::OffsetDeleteRequestTopic::default()
                    .with_name(name())
                    .with_partitions(vec![
                        kafka_protocol::messages::offset_delete_request::OffsetDeleteRequestPartition::default()
                            .with_partition_index(0),
                    ]),
            ]),
    );
    assert_eq!(od.error_code, GROUP_DENIED, "{od:?}");
    let dgs: DescribeGroupsResponse = call(
        &mut alice,
        ApiKey::DescribeGroups,
        5,
        &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g-admin"))]),
    );
    assert_eq!(dgs.groups[0].error_code, GROUP_DENIED, "{dgs:?}");
    let groups = |c: &mut TcpStream| -> Vec<String> {
        let l: ListGroupsResponse = call(c, ApiKey::ListGroups, 4, &ListGroupsRequest::default());
        l.groups.iter().map(|g| g.group_id.to_string()).collect()
    };
    assert!(groups(&mut alice).is_empty());
    assert_eq!(groups(&mut admin), vec!["g-admin".to_string()]);
    // DescribeTopicPartitions: named → TOPIC_AUTHORIZATION_FAILED, all → left out.
    let dtp: DescribeTopicPartitionsResponse = call(
        &mut alice,
        ApiKey::DescribeTopicPartitions,
        0,
        &DescribeTopicPartitionsRequest::default()
            .with_response_partition_limit(100)
            .with_topics(vec![
                kafka_protocol::messages::describe_topic_partitions_request::TopicRequest::default(
                )
                .with_name(name()),
            ]),
    );
    assert_eq!(dtp.topics[0].error_code, TOPIC_DENIED, "{dtp:?}");
    let dtp: DescribeTopicPartitionsResponse = call(
        &mut alice,
        ApiKey::DescribeTopicPartitions,
        0,
        &DescribeTopicPartitionsRequest::default().with_response_partition_limit(100),
    );
    assert!(dtp.topics.is_empty(), "{dtp:?}");

    // Nothing changed: the records, the committed offset, the group, the topic's configs.
    assert_eq!(offsets_of(&mut admin, "secret"), (0, 3));
    let of: OffsetFetchResponse = call(
        &mut admin,
        ApiKey::OffsetFetch,
        7,
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(s("g-admin")))
            .with_topics(None),
    );
    assert_eq!(of.topics[0].partitions[0].committed_offset, 2, "{of:?}");
    let dc: DescribeConfigsResponse = call(
        &mut admin,
        ApiKey::DescribeConfigs,
        4,
        &DescribeConfigsRequest::default().with_resources(vec![
            kafka_protocol::messages::describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("secret"))
                .with_configuration_keys(Some(vec![s("retention.ms")])),
        ]),
    );
    assert_eq!(dc.results[0].error_code, 0);
    assert_ne!(
        dc.results[0].configs[0].value.as_deref(),
        Some("1"),
        "{dc:?}"
    );
    let dt: DescribeTransactionsResponse = call(
        &mut admin,
        ApiKey::DescribeTransactions,
        0,
        &DescribeTransactionsRequest::default()
            .with_transactional_ids(vec![TransactionalId(s("tx-admin"))]),
    );
    assert_eq!(
        dt.transaction_states[0].transaction_state.as_str(),
        "Empty",
        "{dt:?}"
    );

    // Allowed once granted: WRITE on one topic lets alice's idempotent producer start
    // (KIP-679), and DESCRIBE on the group shows it to her.
    let acl = |rt: i8, name: &'static str, op: i8| {
        kafka_protocol::messages::create_acls_request::AclCreation::default()
            .with_resource_type(rt)
            .with_resource_name(s(name))
            .with_resource_pattern_type(3)
            .with_principal(s("User:alice"))
            .with_host(s("*"))
            .with_operation(op)
            .with_permission_type(3)
    };
    let c: CreateAclsResponse = call(
        &mut admin,
        ApiKey::CreateAcls,
        3,
        &CreateAclsRequest::default()
            .with_creations(vec![acl(2, "secret", 4), acl(3, "g-admin", 8)]),
    );
    assert!(c.results.iter().all(|r| r.error_code == 0), "{c:?}");
    let i: InitProducerIdResponse = call(&mut alice, ApiKey::InitProducerId, 4, &init_req(None));
    assert_eq!(i.error_code, 0, "{i:?}");
    assert_eq!(groups(&mut alice), vec!["g-admin".to_string()]);
    let log = broker.log();
    assert!(
        log.contains("User:alice is Denied operation = WRITE") && log.contains("TransactionalId"),
        "{log}"
    );
}

/// A TLS client configuration trusting the test CA, with a client certificate or without.
fn tls_client_config(
    ca: &Path,
    cert: Option<&(PathBuf, PathBuf)>,
) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(c.expect("ca cert")).expect("add ca");
    }
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    let config = match cert {
        None => builder.with_no_client_auth(),
        Some((pem, key)) => {
            let chain = CertificateDer::pem_file_iter(pem)
                .expect("cert")
                .collect::<Result<Vec<_>, _>>()
                .expect("certs");
            let key = PrivateKeyDer::from_pem_file(key).expect("key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        }
    };
    std::sync::Arc::new(config)
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS client connection to `port` (the handshake runs with the first write).
fn tls_connect(port: u16, config: std::sync::Arc<rustls::ClientConfig>) -> TlsStream {
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(config, name).expect("client");
    rustls::StreamOwned::new(conn, tcp)
}

/// Connects with TLS to `port` and sends ApiVersions: true when a response came back, false
/// when the broker refused (an alert, or the connection closed) within 10 s.
fn tls_api_versions(port: u16, config: std::sync::Arc<rustls::ClientConfig>) -> bool {
    api_versions_over(&mut tls_connect(port, config))
}

/// Sends ApiVersions on `tls`: true when a response came back.
fn api_versions_over(tls: &mut TlsStream) -> bool {
    let req = frame(
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("t"))
            .with_client_software_version(StrBytes::from_static_str("1")),
    );
    if tls.write_all(&req).and_then(|_| tls.flush()).is_err() {
        return false;
    }
    let mut size = [0u8; 4];
    if tls.read_exact(&mut size).is_err() {
        return false;
    }
    let mut body = vec![0u8; i32::from_be_bytes(size).max(0) as usize];
    tls.read_exact(&mut body).is_ok()
}

#[test]
fn mtls_principal_is_the_mapped_certificate_subject_and_acls_apply_to_it() {
    let ca = pki();
    let alice = ca.client_cert("alice", "/O=shardlog-test/CN=Alice");
    let bob = ca.client_cert("bob", "/O=other/CN=bob");
    let (ssl, optional) = (free_port(), free_port());
    let listeners = format!(
        "listeners=PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:{ssl},OPTIONAL://127.0.0.1:{optional}"
    );
    let keystore = format!("ssl.keystore.location={}", ca.keystore.display());
    let truststore = format!("ssl.truststore.location={}", ca.ca.display());
    let broker = Broker::start(
        1,
        &[
            &listeners,
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SSL:SSL,OPTIONAL:SSL",
            "ssl.keystore.type=PEM",
            &keystore,
            "ssl.truststore.type=PEM",
            &truststore,
            "ssl.client.auth=required",
            "listener.name.optional.ssl.client.auth=requested",
            // CN of the test organisation, lower-cased; anyone else by the whole DN.
            "ssl.principal.mapping.rules=RULE:^CN=([^,]+),O=shardlog-test$/$1/L,DEFAULT",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            // The plaintext listener's principal administers (topics and ACLs).
            "super.users=User:ANONYMOUS",
        ],
    );
    let plaintext = broker.bootstrap();
    for tag in ["mtls-a", "mtls-b"] {
        librdkafka("produce_consume", &plaintext, tag, &[], &broker);
    }
    let dir = tempfile::tempdir().expect("tmp");
    let props = dir.path().join("admin.properties");
    std::fs::write(&props, "security.protocol=PLAINTEXT\n").expect("props");
    for principal in ["User:alice", "User:CN=bob,O=other"] {
        kafka_acls(
            &plaintext,
            &props,
            &[
                "--add",
                "--allow-principal",
                principal,
                "--operation",
                "Read",
                "--group",
                "g-mtls-",
                "--resource-pattern-type",
                "prefixed",
            ],
            &broker,
        );
    }
    let allow_read = |principal: &str, topic: &str| {
        kafka_acls(
            &plaintext,
            &props,
            &[
                "--add",
                "--allow-principal",
                principal,
                "--operation",
                "Read",
                "--topic",
                topic,
            ],
            &broker,
        );
    };
    allow_read("User:alice", "t-mtls-a");
    let ca_path = ca.ca.display().to_string();
    let with_cert = |(pem, key): &(PathBuf, PathBuf)| {
        kv(&[
            ("security.protocol", "SSL"),
            ("ssl.ca.location", &ca_path),
            ("ssl.certificate.location", &pem.display().to_string()),
            ("ssl.key.location", &key.display().to_string()),
        ])
    };
    let bootstrap = format!("127.0.0.1:{ssl}");
    let count = |conf: Vec<String>| [vec!["20".to_string()], conf].concat();
    // CN=Alice,O=shardlog-test is User:alice by the rule: she reads A and not B.
    librdkafka(
        "consume",
        &bootstrap,
        "mtls-a",
        &count(with_cert(&alice)),
        &broker,
    );
    librdkafka(
        "consume_denied",
        &bootstrap,
        "mtls-b",
        &with_cert(&alice),
        &broker,
    );
    // bob's DN matches no rule but DEFAULT: his principal is the DN in RFC 2253 form, and
    // an ACL naming it (through kafka-acls) lets him read B.
    librdkafka(
        "consume_denied",
        &bootstrap,
        "mtls-b",
        &with_cert(&bob),
        &broker,
    );
    allow_read("User:CN=bob,O=other", "t-mtls-b");
    librdkafka(
        "consume",
        &bootstrap,
        "mtls-b",
        &count(with_cert(&bob)),
        &broker,
    );
    librdkafka(
        "consume_denied",
        &bootstrap,
        "mtls-a",
        &with_cert(&bob),
        &broker,
    );
    let log = broker.log();
    assert!(
        log.contains("Principal = User:alice is Denied operation = DESCRIBE")
            && log.contains("Principal = User:CN=bob,O=other is Denied operation = DESCRIBE"),
        "{log}"
    );

    // `required`: a client without a certificate is refused at the handshake; with one it is
    // served. `requested` (the OPTIONAL listener): served either way.
    assert!(!tls_api_versions(ssl, tls_client_config(&ca.ca, None)));
    assert!(tls_api_versions(
        ssl,
        tls_client_config(&ca.ca, Some(&alice))
    ));
    assert!(tls_api_versions(optional, tls_client_config(&ca.ca, None)));
    assert!(tls_api_versions(
        optional,
        tls_client_config(&ca.ca, Some(&bob))
    ));
    let log = broker.log();
    assert!(log.contains("TLS handshake failed"), "{log}");
    // A certificate from another CA is refused under `requested` too.
    let other = pki();
    let stranger = other.client_cert("stranger", "/CN=stranger");
    assert!(!tls_api_versions(
        optional,
        tls_client_config(&ca.ca, Some(&stranger))
    ));
    let mut s = TcpStream::connect(broker.bootstrap()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let body = request(
        &mut s,
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("t"))
            .with_client_software_version(StrBytes::from_static_str("1")),
    );
    assert_eq!(
        ApiVersionsResponse::decode(&mut body.clone(), 3)
            .expect("decode")
            .error_code,
        0
    );
}

#[test]
fn bad_ssl_principal_mapping_rules_stop_the_start() {
    for (rules, expect) in [
        ("RULE:^CN=(.*)$/$1/X", "unmatched substring: `X`"),
        ("DEFAULT,RULE:^CN=(.*$/$1/", "Invalid rule"),
        ("default", "Invalid rule: `default`"),
    ] {
        let dir = common::temp_data_dir();
        let out = Command::new(env!("CARGO_BIN_EXE_shardlog"))
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--cores")
            .arg("1")
            .arg("--set")
            .arg(format!("ssl.principal.mapping.rules={rules}"))
            .output()
            .expect("run");
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{rules} started");
        assert!(
            text.contains("ssl.principal.mapping.rules") && text.contains(expect),
            "{rules}: {text}"
        );
    }
}

/// `kafka-configs --bootstrap-server <bootstrap> ARGS` (Apache Kafka's ConfigCommand, from
/// the jars of `perf/peers/kafka/kafka.sh install`); (succeeded, output).
fn kafka_configs(bootstrap: &str, args: &[&str]) -> (bool, String) {
    let kafka = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("perf/peers/kafka/kafka.sh");
    assert!(
        Command::new(&kafka)
            .arg("installed")
            .status()
            .is_ok_and(|s| s.success()),
        "Apache Kafka's jars are missing: run perf/peers/kafka/kafka.sh install"
    );
    let mut cmd = Command::new(&kafka);
    cmd.arg("java")
        .arg("kafka.admin.ConfigCommand")
        .arg("--bootstrap-server")
        .arg(bootstrap)
        .args(args)
        .stdin(std::process::Stdio::null());
    run_bounded(cmd, Duration::from_secs(120))
}

/// The leaf certificate the broker presented on `tls` (after a request went through).
fn presented(tls: &TlsStream) -> Vec<u8> {
    tls.conn
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("server certificate")
        .to_vec()
}

fn der_of(pem: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(pem)
        .expect("cert")
        .to_vec()
}

#[test]
fn tls_keystore_reloads_through_kafka_configs_without_a_restart() {
    let ca = pki();
    let (renewed, renewed_pem) = ca.server_keystore("renewed");
    let (third, third_pem) = ca.server_keystore("third");
    let original = der_of(&ca._dir.path().join("server.pem"));
    let ssl = free_port();
    let listeners = format!("listeners=PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:{ssl}");
    let keystore = format!("ssl.keystore.location={}", ca.keystore.display());
    let mut broker = Broker::start(1, &[&listeners, "ssl.keystore.type=PEM", &keystore]);
    let client = tls_client_config(&ca.ca, None);
    let served_now = || {
        let mut c = tls_connect(ssl, client.clone());
        assert!(api_versions_over(&mut c), "no answer over TLS");
        presented(&c)
    };
    let mut old = tls_connect(ssl, client.clone());
    assert!(api_versions_over(&mut old));
    assert_eq!(presented(&old), original);
    let set = |keystore: &Path| {
        kafka_configs(
            &broker.bootstrap(),
            &[
                "--alter",
                "--entity-type",
                "brokers",
                "--entity-name",
                "0",
                "--add-config",
                &format!(
                    "listener.name.ssl.ssl.keystore.location={}",
                    keystore.display()
                ),
            ],
        )
    };
    let (ok, out) = set(&renewed);
    assert!(ok, "{out}\n{}", broker.log());
    // New connections get the renewed certificate; the open one goes on being served.
    assert_eq!(served_now(), der_of(&renewed_pem));
    assert!(api_versions_over(&mut old), "{}", broker.log());
    let (ok, out) = kafka_configs(
        &broker.bootstrap(),
        &[
            "--describe",
            "--entity-type",
            "brokers",
            "--entity-name",
            "0",
        ],
    );
    assert!(
        ok && out.contains(&format!(
            "listener.name.ssl.ssl.keystore.location={}",
            renewed.display()
        )),
        "{out}"
    );
    // A keystore that cannot be read is refused with the reason; nothing changes.
    let (ok, out) = set(Path::new("/nonexistent/keystore.pem"));
    assert!(
        !ok && out.contains("cannot read /nonexistent/keystore.pem"),
        "{out}"
    );
    assert_eq!(served_now(), der_of(&renewed_pem));
    // As in Kafka, a certificate for another name is refused (ssl.allow.dn.changes and
    // ssl.allow.san.changes are false by default).
    let (elsewhere, _) = ca.server_keystore_for("elsewhere", "/CN=elsewhere", "DNS:localhost");
    let (ok, out) = set(&elsewhere);
    assert!(
        !ok && out.contains("Keystore DistinguishedName does not match"),
        "{out}"
    );
    let (more, _) = ca.server_keystore_for(
        "more",
        "/CN=localhost",
        "IP:127.0.0.1,DNS:localhost,DNS:other",
    );
    let (ok, out) = set(&more);
    assert!(
        !ok && out.contains("Keystore SubjectAltNames do not match"),
        "{out}"
    );
    assert_eq!(served_now(), der_of(&renewed_pem));
    // The same location again, after the file was replaced in place: reloaded.
    std::fs::copy(&third, &renewed).expect("replace keystore");
    let (ok, out) = set(&renewed);
    assert!(ok, "{out}\n{}", broker.log());
    assert_eq!(served_now(), der_of(&third_pem));
    // The dynamic value is kept across a restart.
    broker.kill9();
    broker.restart();
    assert_eq!(served_now(), der_of(&third_pem));
}

#[test]
fn sasl_sessions_end_after_connections_max_reauth_ms_unless_the_client_reauthenticates() {
    let port = free_port();
    let listeners = format!("listeners=PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:{port}");
    let jaas = format!("listener.name.sasl_plaintext.plain.sasl.jaas.config={PLAIN_JAAS}");
    let broker = Broker::start(
        1,
        &[
            &listeners,
            "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-512",
            &jaas,
            "listener.name.sasl_plaintext.connections.max.reauth.ms=3000",
            // SCRAM's sessions are longer (Kafka's per-mechanism form).
            "listener.name.sasl_plaintext.scram-sha-512.connections.max.reauth.ms=10000",
        ],
    );
    let connect = || {
        let c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        c
    };
    let metadata = frame(ApiKey::Metadata, 12, &MetadataRequest::default());
    let served = |c: &mut TcpStream| {
        let body = request(c, ApiKey::Metadata, 12, &MetadataRequest::default());
        MetadataResponse::decode(&mut body.clone(), 12).is_ok()
    };
    let login = |c: &mut TcpStream, mech: &'static str, token: &[u8]| {
        assert_eq!(handshake(c, mech).error_code, 0);
        authenticate(c, token)
    };
    // The session length is told to the client, and re-authenticating renews it.
    let mut c = connect();
    let r = login(&mut c, "PLAIN", b"\0alice\0alice-secret");
    assert_eq!((r.error_code, r.session_lifetime_ms), (0, 3000));
    assert!(served(&mut c));
    std::thread::sleep(Duration::from_millis(2000));
    let r = login(&mut c, "PLAIN", b"\0alice\0alice-secret");
    assert_eq!((r.error_code, r.session_lifetime_ms), (0, 3000));
    std::thread::sleep(Duration::from_millis(2000));
    assert!(served(&mut c), "served past the first session's end");
    // Not re-authenticated in time: the next request closes the connection.
    std::thread::sleep(Duration::from_millis(3200));
    c.write_all(&metadata).expect("write");
    assert!(is_closed(&mut c));
    // Re-authentication keeps the principal and the mechanism, or the connection fails.
    let mut c = connect();
    assert_eq!(
        login(&mut c, "PLAIN", b"\0alice\0alice-secret").error_code,
        0
    );
    let r = login(&mut c, "PLAIN", b"\0admin\0admin-secret");
    assert_eq!(r.error_code, 58, "SASL_AUTHENTICATION_FAILED");
    let message = r.error_message.map(|m| m.to_string()).unwrap_or_default();
    assert!(message.contains("Cannot change principals"), "{message}");
    assert!(is_closed(&mut c));
    let mut c = connect();
    assert_eq!(
        login(&mut c, "PLAIN", b"\0alice\0alice-secret").error_code,
        0
    );
    let r = login(&mut c, "SCRAM-SHA-512", b"n,,n=alice,r=abcdefgh");
    assert_eq!(r.error_code, 58);
    assert!(is_closed(&mut c));
    // The Java client re-authenticates on its own: a 15 s run over 10 s SCRAM sessions (the
    // client renews at 85-95 % of it) goes through, no connection closed for an expired one.
    librdkafka(
        "scram_upsert",
        &broker.bootstrap(),
        "up-reauth",
        &["erin".into(), "erin-secret".into(), "SCRAM-SHA-512".into()],
        &broker,
    );
    let dir = tempfile::tempdir().expect("tmp");
    let props = dir.path().join("client.properties");
    std::fs::write(
        &props,
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\nsasl.jaas.config=\
         org.apache.kafka.common.security.scram.ScramLoginModule required \
         username=\"erin\" password=\"erin-secret\";\n",
    )
    .expect("props");
    let (ok, out) = java_tool(
        "org.apache.kafka.tools.ProducerPerformance",
        &[
            "--topic".into(),
            "t-reauth".into(),
            "--num-records".into(),
            "300".into(),
            "--record-size".into(),
            "100".into(),
            "--throughput".into(),
            "20".into(),
            "--producer-props".into(),
            format!("bootstrap.servers=127.0.0.1:{port}"),
            "acks=all".into(),
            "--producer.config".into(),
            props.display().to_string(),
        ],
    );
    assert!(
        ok && out.contains("300 records sent"),
        "{out}\n{}",
        broker.log()
    );
    let log = broker.log();
    assert_eq!(
        log.matches("SASL session expired").count(),
        1,
        "only the raw connection above expired:\n{log}"
    );
}
