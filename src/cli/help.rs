//! The examples `--help` shows after the options of the common commands,
//! and what `exec --help` says about its environment and exit status.

/// `jitid dev --help`.
pub(crate) const DEV: &str = "\
Examples:
  jitid dev                                  # trust domain in certs/dev, on 127.0.0.1:8443
  jitid dev --listen 127.0.0.1:9443          # another port
  jitid dev --redis redis://127.0.0.1:6379   # grants in Redis instead of memory

It prints the export lines that point the other commands at it.";

/// `jitid serve --help`.
pub(crate) const SERVE: &str = "\
Examples:
  jitid serve --config /etc/jitid/jitid.toml
  JITID_CONFIG=/etc/jitid/jitid.toml JITID_LOG=info,jitid=debug jitid serve
  jitid policy check /etc/jitid/jitid.toml && jitid serve --config /etc/jitid/jitid.toml";

/// `jitid fetch x509 --help`.
pub(crate) const FETCH_X509: &str = "\
Examples:
  jitid fetch x509 --entitlement ci-publish --task build-1 --ttl 5m --out /tmp/svid
  jitid fetch x509 --entitlement prod-deploy --justification 'release 1.4' --ticket CHG-12 --wait --out /tmp/svid
  jitid fetch x509 --entitlement db-migrate --break-glass --justification 'incident 311' --out /tmp/svid
  jitid fetch x509 --entitlement release-from-ci --oidc-token-file /run/ci/id-token --out /tmp/svid";

/// `jitid fetch jwt --help`.
pub(crate) const FETCH_JWT: &str = "\
Examples:
  jitid fetch jwt --entitlement ci-publish --audience artifacts.example.org
  TOKEN=$(jitid fetch jwt --entitlement ci-publish --audience artifacts.example.org --ttl 2m)
  jitid fetch jwt --entitlement ci-publish --audience api.example.org --bind --output json";

/// `jitid exec --help`: examples, the variables and the exit status.
pub(crate) const EXEC: &str = "\
The command gets these variables (paths are in a private directory that is
wiped when it exits):
  JITID_SVID      the X.509-SVID chain, leaf first (PEM)
  JITID_SVID_KEY  its private key (PEM, 0600)
  JITID_BUNDLE    the trust bundle (PEM)
  JITID_JWT       the JWT-SVID file, only with --jwt-audience
  JITID_TASK      the task id
  JITID_GRANT     the grant id of the first credentials
The credentials are renewed while the command runs; when it exits the task is
completed (as failed if the command failed), which revokes them.

Exit status: the command's own status (128 + N if signal N killed it). Before
the command runs, jitid's exit codes apply (3 refused, 5 server unavailable,
8 needs approval: add --wait). If the task cannot be completed afterwards,
exec says so on stderr and exits 5 even if the command succeeded.

Examples:
  jitid exec --entitlement ci-publish -- ./publish.sh
  jitid exec --entitlement ci-publish --jwt-audience artifacts.example.org -- sh -c 'curl -H \"Authorization: Bearer $(cat $JITID_JWT)\" ...'
  jitid exec --entitlement prod-deploy --justification 'release 1.4' --ticket CHG-12 --wait -- ./deploy.sh
  jitid exec --github-actions --entitlement release-from-ci -- ./release.sh   (a GitHub Actions job, no stored key)";

/// `jitid grants list --help`.
pub(crate) const GRANTS_LIST: &str = "\
Examples:
  jitid grants list
  jitid grants list --state active --output json
  jitid grants list --awaiting-approval          # requests you may approve";

/// `jitid revoke --help`.
pub(crate) const REVOKE: &str = "\
Examples:
  jitid revoke --grant 0d5c...e1 --reason 'job cancelled'
  jitid revoke --task build-1
  jitid revoke --subject spiffe://example.org/ci/runner-7 --reason 'runner compromised'   # admins";

/// `jitid verify --help`.
pub(crate) const VERIFY: &str = "\
Exit status: 0 when VALID; 6 when REVOKED, EXPIRED, UNKNOWN or INVALID (the
verdict and its reason are printed on stdout, not as an error).

Examples:
  jitid verify --x509 /tmp/svid/svid.pem
  jitid verify --jwt \"$TOKEN\" --audience artifacts.example.org --output json
  jitid verify --x509 /tmp/svid/svid.pem >/dev/null && echo live";

/// `jitid approve --help`.
pub(crate) const APPROVE: &str = "\
Examples:
  jitid grants list --awaiting-approval
  jitid approve 0d5c...e1 --comment 'checked CHG-12'
  jitid deny 0d5c...e1 --reason 'no change ticket'";
