//! `jitid exec` end to end: the real binary runs a shell script against a
//! Redis-backed server over real mTLS; the script reports what it sees
//! and waits for the test to let it exit.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use jitid::client::{Client, ClientConfig, RetryPolicy};
use jitid::proto::v1 as pb;
use jitid::store::{RedisStore, RedisStoreConfig};
use rustix::process::{Pid, Signal};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::support::redis::RedisServer;
use crate::support::svid::check_x509_svid;
use crate::support::{CI_RUNNER, TestEnv, jitid_bin};

/// Script fragment: writes the `JITID_*` variables and the shell's pid to
/// `$WORK/env`, whole (renamed into place), for the test to read.
const REPORT: &str = r#"{ env | grep '^JITID_'; echo "PID=$$"; } > "$WORK/env.tmp" && mv "$WORK/env.tmp" "$WORK/env""#;
/// Script fragment: copies the X.509-SVID out, to `$WORK/saved.pem`.
const SAVE: &str = r#"cp "$JITID_SVID" "$WORK/saved.pem""#;
/// Script fragment: waits until the test creates `$WORK/go`.
const WAIT_FOR_GO: &str = r#"while [ ! -e "$WORK/go" ]; do sleep 0.05; done"#;

/// Long enough for a loaded 2-core machine, short enough to fail fast.
const DEADLINE: Duration = Duration::from_secs(30);

/// A server on a fresh redis-server.
async fn redis_env() -> (RedisServer, TestEnv) {
    let redis = RedisServer::start();
    let store = RedisStore::connect(RedisStoreConfig::new(&redis.url()))
        .await
        .unwrap();
    let env = TestEnv::start_with(Arc::new(store)).await;
    (redis, env)
}

/// One `jitid exec` process: the script's `$WORK`, the `TMPDIR` its
/// credential directory goes in, and its stderr in a file.
struct ExecRun {
    child: Child,
    dir: tempfile::TempDir,
}

impl ExecRun {
    /// Starts `jitid exec ARGS -- /bin/sh -c SCRIPT` as the CI runner.
    fn start(env: &TestEnv, args: &[&str], script: &str) -> Self {
        Self::start_at(env, &env.url(), args, script)
    }

    fn start_at(env: &TestEnv, server: &str, args: &[&str], script: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("work")).unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        let (cert, key) = env.identity_files(CI_RUNNER);
        let child = Command::new(jitid_bin())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("TMPDIR", dir.path().join("tmp"))
            .env("WORK", dir.path().join("work"))
            .env("JITID_SERVER", server)
            .env("JITID_CA", &env.ca.root_cert)
            .env("JITID_CERT", cert)
            .env("JITID_KEY", key)
            .arg("exec")
            .args(args)
            .args(["--", "/bin/sh", "-c", script])
            .stdin(Stdio::null())
            .stdout(File::create(dir.path().join("stdout")).unwrap())
            .stderr(File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .unwrap();
        Self { child, dir }
    }

    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// Where [`SAVE`] copied the X.509-SVID.
    fn saved(&self) -> PathBuf {
        self.work().join("saved.pem")
    }

    /// The `JITID_*` variables (and `PID`) the script reported.
    fn reported(&mut self) -> HashMap<String, String> {
        let path = self.work().join("env");
        let deadline = Instant::now() + DEADLINE;
        while !path.exists() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("exec exited {status} first: {}", self.stderr());
            }
            assert!(Instant::now() < deadline, "no report: {}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect()
    }

    /// Lets the script go on past [`WAIT_FOR_GO`].
    fn go(&self) {
        File::create(self.work().join("go")).unwrap();
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    fn signal(&self, signal: Signal) {
        kill(self.child.id(), signal);
    }

    /// Waits for `jitid exec` to exit; returns its status and stderr.
    fn wait(&mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, self.stderr());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("exec did not exit: {}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What is left in the `TMPDIR`: nothing, once exec has cleaned up.
    fn leftovers(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.path().join("tmp"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect()
    }
}

impl Drop for ExecRun {
    fn drop(&mut self) {
        // Let an orphaned script end too.
        let _ = File::create(self.work().join("go"));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kill(pid: u32, signal: Signal) {
    let pid = Pid::from_raw(i32::try_from(pid).unwrap()).unwrap();
    rustix::process::kill_process(pid, signal).unwrap();
}

/// A file's whole contents through an open handle, which keeps reading
/// the same file after its path is renamed over or removed.
fn contents(file: &File) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut reader = file;
    reader.rewind().unwrap();
    reader.read_to_end(&mut bytes).unwrap();
    bytes
}

fn is_zeroed(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(|byte| *byte == 0)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn chain(path: &Path) -> Vec<CertificateDer<'static>> {
    jitid::ca::read_certs(path).unwrap()
}

/// The grant id in an X.509-SVID file's grant extension.
fn grant_of(path: &Path) -> String {
    jitid::ca::GrantExtension::from_certificate(chain(path)[0].as_ref())
        .unwrap()
        .grant_id
}

async fn x509_status(client: &Client, path: &Path) -> (pb::VerifyStatus, String) {
    let response = client.verify_x509(&chain(path)).await.unwrap();
    (response.status(), response.reason)
}

/// Whether the credential a `Verify` answer describes is past its expiry.
fn has_expired(response: &pb::VerifyResponse) -> bool {
    let seconds = response.expires_at.as_ref().unwrap().seconds;
    SystemTime::now()
        >= SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap())
}

/// The status of a credential that may run out before it is checked:
/// EXPIRED is taken as `fallback` only once it has expired.
async fn status_unless_expired(
    client: &Client,
    path: &Path,
    fallback: pb::VerifyStatus,
) -> pb::VerifyStatus {
    let response = client.verify_x509(&chain(path)).await.unwrap();
    match response.status() {
        pb::VerifyStatus::Expired if has_expired(&response) => fallback,
        status => status,
    }
}

/// Waits for a run to end and checks how: exec's exit code, the task's
/// end on stderr (`ended`, e.g. "task b-1 ended (failed)"), nothing left
/// in TMPDIR, and the credential the script saved ([`SAVE`]) REVOKED.
async fn assert_ended(run: &mut ExecRun, relying_party: &Client, code: i32, ended: &str) {
    let (status, stderr) = run.wait();
    assert_eq!(status.code(), Some(code), "{stderr}");
    assert!(stderr.contains(ended), "{ended:?} in {stderr}");
    assert!(
        run.leftovers().is_empty(),
        "the credential directory is wiped"
    );
    let (status, reason) = x509_status(relying_party, &run.saved()).await;
    assert_eq!(status, pb::VerifyStatus::Revoked, "{reason}");
    // The issuer records how the task ended: "grant G completed: failed by ...".
    let outcome = if ended.contains("(failed)") {
        "completed: failed by"
    } else {
        "completed: completed by"
    };
    assert!(reason.contains(outcome), "{outcome:?} in {reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_hands_private_credentials_to_the_command_and_revokes_them_after() {
    let (_redis, env) = redis_env().await;
    let relying_party = env.client_for(CI_RUNNER).await;
    let mut run = ExecRun::start(
        &env,
        &[
            "--entitlement",
            "ci-publish",
            "--actions",
            "publish:artifacts",
            "--task",
            "build-1",
            "--jwt-audience",
            "artifacts.example.org",
        ],
        &format!(r#"{SAVE} && cp "$JITID_JWT" "$WORK/saved.jwt" && {REPORT}; {WAIT_FOR_GO}"#),
    );
    let vars = run.reported();
    for name in [
        "JITID_SVID",
        "JITID_SVID_KEY",
        "JITID_BUNDLE",
        "JITID_JWT",
        "JITID_TASK",
        "JITID_GRANT",
    ] {
        assert!(vars.contains_key(name), "{name} missing from {vars:?}");
    }
    // Exec's own attestation identity is not handed down.
    for name in ["JITID_CERT", "JITID_KEY", "JITID_OIDC_TOKEN_FILE"] {
        assert!(!vars.contains_key(name), "{name} handed down: {vars:?}");
    }
    assert_eq!(vars["JITID_TASK"], "build-1");
    let svid = PathBuf::from(&vars["JITID_SVID"]);
    let dir = svid.parent().unwrap().to_owned();
    assert_eq!(run.leftovers(), std::slice::from_ref(&dir), "in TMPDIR");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(Path::new(&vars["JITID_SVID_KEY"])), 0o600);
    assert_eq!(mode(Path::new(&vars["JITID_JWT"])), 0o600);

    // The chain names the runner and the grant, and the key is its key.
    let key_pem = std::fs::read(&vars["JITID_SVID_KEY"]).unwrap();
    let key = PrivateKeyDer::from_pem_slice(&key_pem).unwrap();
    let extension = check_x509_svid(
        &chain(&svid),
        Some(key.secret_der()),
        &env.roots(),
        CI_RUNNER,
    );
    assert_eq!(extension.grant_id, vars["JITID_GRANT"]);
    assert_eq!(extension.task_id, "build-1");
    assert_eq!(extension.actions, ["publish:artifacts"]);
    assert_eq!(chain(Path::new(&vars["JITID_BUNDLE"])), env.roots());
    let saved = run.saved();
    assert_eq!(
        x509_status(&relying_party, &saved).await.0,
        pb::VerifyStatus::Valid
    );
    let token = std::fs::read_to_string(run.work().join("saved.jwt")).unwrap();
    let jwt = relying_party
        .verify_jwt(&token, "artifacts.example.org")
        .await
        .unwrap();
    assert_eq!(jwt.status(), pb::VerifyStatus::Valid);
    assert_eq!(jwt.grant_id, vars["JITID_GRANT"], "one grant for both");

    // Held open, the secrets show what the wipe did to them.
    let key_file = File::open(&vars["JITID_SVID_KEY"]).unwrap();
    let jwt_file = File::open(&vars["JITID_JWT"]).unwrap();
    run.go();
    assert_ended(
        &mut run,
        &relying_party,
        0,
        "task build-1 ended (completed)",
    )
    .await;
    assert!(is_zeroed(&contents(&key_file)), "the key is zeroed");
    assert!(is_zeroed(&contents(&jwt_file)), "the JWT is zeroed");
    let jwt = relying_party
        .verify_jwt(&token, "artifacts.example.org")
        .await
        .unwrap();
    assert_eq!(jwt.status(), pb::VerifyStatus::Revoked);

    // The command's status is exec's; a failed command ends its task too.
    let mut failing = ExecRun::start(
        &env,
        &["--entitlement", "ci-publish", "--task", "build-2"],
        &format!("{SAVE}; exit 7"),
    );
    assert_ended(
        &mut failing,
        &relying_party,
        7,
        "task build-2 ended (failed)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_killed_by_a_signal_exits_128_plus_n_and_its_task_ends() {
    let (_redis, env) = redis_env().await;
    let relying_party = env.client_for(CI_RUNNER).await;
    let mut run = ExecRun::start(
        &env,
        &["--entitlement", "ci-publish", "--task", "build-3"],
        &format!("{SAVE} && {REPORT}; {WAIT_FOR_GO}"),
    );
    let vars = run.reported();
    let saved = run.saved();
    assert_eq!(
        x509_status(&relying_party, &saved).await.0,
        pb::VerifyStatus::Valid
    );
    kill(vars["PID"].parse().unwrap(), Signal::KILL);
    assert_ended(&mut run, &relying_party, 137, "task build-3 ended (failed)").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_to_exec_are_forwarded_and_the_task_ends_after_the_command() {
    let (_redis, env) = redis_env().await;
    let relying_party = env.client_for(CI_RUNNER).await;
    // The script notes SIGUSR1 and goes on; on SIGTERM it cleans up, then
    // dies of the signal as a well-behaved program does.
    let mut run = ExecRun::start(
        &env,
        &["--entitlement", "ci-publish", "--task", "build-4"],
        &format!(
            r#"trap 'touch "$WORK/usr1"' USR1
trap 'touch "$WORK/cleaned-up"; trap - TERM; kill -TERM $$' TERM
{SAVE} && {REPORT}; {WAIT_FOR_GO}"#
        ),
    );
    run.reported();
    run.signal(Signal::USR1);
    let usr1 = run.work().join("usr1");
    let deadline = Instant::now() + DEADLINE;
    while !usr1.exists() {
        assert!(Instant::now() < deadline, "SIGUSR1 was not forwarded");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(run.child.try_wait().unwrap().is_none(), "exec runs on");

    run.signal(Signal::TERM);
    assert_ended(&mut run, &relying_party, 143, "task build-4 ended (failed)").await;
    assert!(
        run.work().join("cleaned-up").exists(),
        "the command got SIGTERM"
    );
}

/// SIGKILL gives exec no chance to clean up. What remains: the command
/// (orphaned, still running), the credential directory with its key, and
/// a credential that stays VALID until its TTL runs out, then EXPIRED.
/// That is why exec's credentials should be short-lived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigkill_to_exec_the_credential_lives_until_its_short_ttl() {
    let (_redis, env) = redis_env().await;
    let relying_party = env.client_for(CI_RUNNER).await;
    let mut run = ExecRun::start(
        &env,
        &[
            "--entitlement",
            "ci-publish",
            "--task",
            "build-5",
            "--ttl",
            "4s",
        ],
        &format!("{SAVE} && {REPORT}; {WAIT_FOR_GO}"),
    );
    let vars = run.reported();
    run.signal(Signal::KILL);
    let (status, _) = run.wait();
    assert_eq!(status.signal(), Some(9));

    let saved = run.saved();
    assert_eq!(
        status_unless_expired(&relying_party, &saved, pb::VerifyStatus::Valid).await,
        pb::VerifyStatus::Valid,
        "nobody completed the task"
    );
    assert!(
        Path::new(&vars["JITID_SVID_KEY"]).exists(),
        "nobody wiped the key"
    );
    let deadline = Instant::now() + DEADLINE;
    loop {
        let response = relying_party.verify_x509(&chain(&saved)).await.unwrap();
        let expired = has_expired(&response);
        match response.status() {
            pb::VerifyStatus::Expired => break,
            pb::VerifyStatus::Valid => assert!(!expired, "VALID after its expiry"),
            // In the second after NotAfter, the store has dropped the grant
            // while the whole-second certificate check still passes.
            pb::VerifyStatus::Unknown if expired => {}
            status => panic!("{status:?}: {}", response.reason),
        }
        assert!(Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_renewed_in_place_while_the_command_runs() {
    let (_redis, env) = redis_env().await;
    let relying_party = env.client_for(CI_RUNNER).await;
    // No --task: the server's task id is kept for renewals. The script
    // holds the first key open, as a command reading it at that moment
    // would.
    let mut run = ExecRun::start(
        &env,
        &["--entitlement", "ci-publish", "--ttl", "3s"],
        &format!(r#"exec 3<"$JITID_SVID_KEY"; {REPORT}; {WAIT_FOR_GO}"#),
    );
    let vars = run.reported();
    let first_key = File::open(format!("/proc/{}/fd/3", vars["PID"])).unwrap();
    let svid = PathBuf::from(&vars["JITID_SVID"]);
    let first_grant = vars["JITID_GRANT"].clone();
    assert_eq!(grant_of(&svid), first_grant);
    let deadline = Instant::now() + DEADLINE;
    while grant_of(&svid) == first_grant {
        assert!(Instant::now() < deadline, "never renewed: {}", run.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }

    // Read at once, before the next renewal (every 2 s or so).
    let first_key_pem = contents(&first_key);
    let key_pem = std::fs::read(&vars["JITID_SVID_KEY"]).unwrap();
    let renewed = run.work().join("renewed.pem");
    std::fs::copy(&svid, &renewed).unwrap();

    // Same paths, a new grant of the same task, with its own key.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).unwrap();
    let extension = check_x509_svid(
        &chain(&renewed),
        Some(key.secret_der()),
        &env.roots(),
        CI_RUNNER,
    );
    assert_eq!(extension.task_id, vars["JITID_TASK"]);
    assert_eq!(mode(Path::new(&vars["JITID_SVID_KEY"])), 0o600);
    // The replaced key is left intact for readers that opened it.
    assert!(first_key_pem.starts_with(b"-----BEGIN PRIVATE KEY-----"));
    assert_ne!(first_key_pem, key_pem);
    // No temp file is left beside them (a later renewal may be writing
    // one right now: poll).
    let listing = || {
        let mut files: Vec<String> = std::fs::read_dir(svid.parent().unwrap())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        files
    };
    while listing() != ["bundle.pem", "svid.key", "svid.pem"] {
        assert!(Instant::now() < deadline, "{:?}", listing());
        std::thread::sleep(Duration::from_millis(10));
    }

    run.go();
    let (status, stderr) = run.wait();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("renewed grant"), "{stderr}");
    assert!(
        stderr.contains(&format!("task {} ended (completed)", vars["JITID_TASK"])),
        "{stderr}"
    );
    assert!(
        is_zeroed(&contents(&first_key)),
        "replaced keys are zeroed too"
    );
    // Completing the task ended the renewed grant too (unless it ran out
    // first on a slow machine).
    assert_eq!(
        status_unless_expired(&relying_party, &renewed, pb::VerifyStatus::Revoked).await,
        pb::VerifyStatus::Revoked
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_out_of_reach_at_the_end_is_reported_and_fails_the_run() {
    let (_redis, env) = redis_env().await;
    let mut succeeding = ExecRun::start(
        &env,
        &["--entitlement", "ci-publish", "--task", "build-6"],
        &format!("{REPORT}; {WAIT_FOR_GO}"),
    );
    let mut failing = ExecRun::start(
        &env,
        &["--entitlement", "ci-publish", "--task", "build-7"],
        &format!("{REPORT}; {WAIT_FOR_GO}; exit 9"),
    );
    let vars = succeeding.reported();
    failing.reported();

    // Stop the server, and wait until it no longer answers.
    let config = ClientConfig {
        server: env.url(),
        server_roots: env.roots(),
        identity: Some(env.identity(CI_RUNNER)),
        retry: RetryPolicy::default(),
    };
    drop(env);
    let deadline = Instant::now() + DEADLINE;
    while let Ok(client) = Client::connect(config.clone()).await {
        if client.fetch_bundle().await.is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "the server still answers");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    succeeding.go();
    failing.go();
    let (status, stderr) = succeeding.wait();
    assert_eq!(status.code(), Some(5), "unavailable: {stderr}");
    for expected in [
        "could not complete task build-6 at the issuer",
        "its credentials stay valid until",
        vars["JITID_GRANT"].as_str(),
        "jitid complete --task build-6",
    ] {
        assert!(stderr.contains(expected), "{expected:?} in {stderr}");
    }
    assert!(succeeding.leftovers().is_empty(), "wiped all the same");
    let (status, stderr) = failing.wait();
    assert_eq!(status.code(), Some(9), "the command's own status: {stderr}");
    assert!(
        stderr.contains("could not complete task build-7"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_refused_requests_never_run_the_command() {
    let (_redis, env) = redis_env().await;
    let ran = |run: &ExecRun| run.work().join("ran").exists();
    let script = r#"touch "$WORK/ran""#;
    let check = |args: &[&str], code: i32, message: &str| {
        let mut run = ExecRun::start(&env, args, script);
        let (status, stderr) = run.wait();
        assert_eq!(status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{message:?} in {stderr}");
        assert!(!ran(&run), "{args:?} ran the command");
        assert!(run.leftovers().is_empty(), "{args:?} left files");
    };
    check(
        &["--ttl", "1m"],
        2,
        "the following required arguments were not provided",
    );
    check(
        &["--entitlement", "agent-research"],
        3,
        "permission denied: spiffe://example.org/ci/runner-1 may not request",
    );
    check(
        &["--entitlement", "ci-publish", "--ttl", "2h"],
        4,
        "invalid argument: ttl 2h exceeds the maximum of 10m",
    );
    let mut unreachable = ExecRun::start_at(
        &env,
        "https://127.0.0.1:1",
        &["--entitlement", "ci-publish"],
        script,
    );
    let (status, stderr) = unreachable.wait();
    assert_eq!(status.code(), Some(5), "{stderr}");
    assert!(!ran(&unreachable));

    // No command after `--`.
    let (cert, key) = env.identity_files(CI_RUNNER);
    let output = Command::new(jitid_bin())
        .env_clear()
        .env("JITID_SERVER", env.url())
        .env("JITID_CA", &env.ca.root_cert)
        .env("JITID_CERT", cert)
        .env("JITID_KEY", key)
        .args(["exec", "--entitlement", "ci-publish", "--"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("<COMMAND>"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // A command that cannot be found: 127, as shells say, and the task
    // fetched for it ends.
    let (cert, key) = env.identity_files(CI_RUNNER);
    let work = tempfile::tempdir().unwrap();
    let output = Command::new(jitid_bin())
        .env_clear()
        .env("TMPDIR", work.path())
        .env("JITID_SERVER", env.url())
        .env("JITID_CA", &env.ca.root_cert)
        .env("JITID_CERT", cert)
        .env("JITID_KEY", key)
        .args(["exec", "--entitlement", "ci-publish", "--task", "build-8"])
        .args(["--", "/nonexistent/release.sh"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(127), "{stderr}");
    assert!(
        stderr.contains("cannot run \"/nonexistent/release.sh\""),
        "{stderr}"
    );
    assert!(stderr.contains("task build-8 ended (failed)"), "{stderr}");
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
}

/// `prod-deploy` allows one active grant at a time (`max_active = 1`), so
/// the policy refuses a renewal while the first grant lives: exec warns and
/// the command keeps the files it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_renewal_keeps_the_current_files_and_warns() {
    let (_redis, env) = redis_env().await;
    let mut run = ExecRun::start(
        &env,
        &[
            "--entitlement",
            "prod-deploy",
            "--justification",
            "ship 2.4",
            "--ticket",
            "CHG-7",
            "--task",
            "deploy-1",
            "--ttl",
            "3s",
        ],
        &format!("{REPORT}; {WAIT_FOR_GO}"),
    );
    let vars = run.reported();
    let deadline = Instant::now() + DEADLINE;
    while !run
        .stderr()
        .contains("renewing the credentials of task deploy-1 failed")
    {
        assert!(Instant::now() < deadline, "no warning: {}", run.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    let stderr = run.stderr();
    assert!(stderr.contains("max_active"), "{stderr}");
    assert!(
        stderr.contains("the command keeps the current ones"),
        "{stderr}"
    );
    assert_eq!(
        grant_of(Path::new(&vars["JITID_SVID"])),
        vars["JITID_GRANT"]
    );
    run.go();
    let (status, stderr) = run.wait();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(run.leftovers().is_empty());
}
