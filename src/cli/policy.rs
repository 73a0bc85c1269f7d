//! `jitid policy check` and `jitid policy explain`: the entitlement
//! catalogue of a config file, validated or put to a request, without a
//! server.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::{Args, Subcommand};
use jitid::config::Config;
use jitid::spiffe_id::SpiffeId;

use super::args::{duration, key_value};
use super::exit::Refused;
use super::output::Output;

#[derive(Subcommand)]
pub(crate) enum PolicyCommand {
    /// Validate a config file's catalogue; errors name file, entry and field.
    Check {
        /// The config file.
        file: PathBuf,
        /// What to print.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Decide a request against a config file's catalogue, and print the
    /// decision with its inputs and the rules that produced it. Issues
    /// nothing; exit 0 when allowed (or needing approval), 3 when denied.
    Explain(ExplainArgs),
}

#[derive(Args)]
pub(crate) struct ExplainArgs {
    /// The config file.
    #[arg(long, env = "JITID_CONFIG")]
    config: PathBuf,
    /// The caller's SPIFFE ID.
    #[arg(long = "as")]
    caller: String,
    /// Entitlement to ask for.
    #[arg(long)]
    entitlement: Option<String>,
    /// Actions (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    actions: Vec<String>,
    /// Requested lifetime.
    #[arg(long, value_parser = duration)]
    ttl: Option<Duration>,
    /// Justification.
    #[arg(long, default_value = "")]
    justification: String,
    /// Ticket reference.
    #[arg(long, default_value = "")]
    ticket: String,
    /// Ask for break-glass.
    #[arg(long)]
    break_glass: bool,
    /// Context as key=value (repeat): `environment` and `source` (an IP)
    /// set those; `attestation` the method (`x509`, the default, or
    /// `oidc`); `claim.NAME` a token claim (and the method `oidc`); any
    /// other key is a label.
    #[arg(long = "context", value_parser = key_value)]
    context: Vec<(String, String)>,
    /// Decide as of this time (RFC 3339), instead of now.
    #[arg(long)]
    at: Option<String>,
    /// What to print.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

pub(crate) fn run(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Check { file, output } => policy_check(&file, output),
        PolicyCommand::Explain(args) => policy_explain(args),
    }
}

/// `jitid policy explain`: decides a request against a config's catalogue
/// locally and prints the decision, its inputs and the rules that matched.
fn policy_explain(args: ExplainArgs) -> anyhow::Result<()> {
    use jitid::policy::{AccessRequest, AttestationFacts, AttestationMethod, RequestContext};
    let config = Config::load(&args.config)?;
    let caller = SpiffeId::new(&args.caller).context("--as")?;
    let actions = args
        .actions
        .iter()
        .map(|action| {
            jitid::grant::Action::new(action).with_context(|| format!("--actions {action:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut context = RequestContext {
        environment: config.environment.clone(),
        ..RequestContext::default()
    };
    let mut method = None;
    let mut claims = std::collections::BTreeMap::new();
    for (key, value) in args.context {
        if let Some(claim) = key.strip_prefix("claim.") {
            claims.insert(claim.to_owned(), serde_json::Value::String(value));
            continue;
        }
        match key.as_str() {
            "attestation" => {
                method =
                    Some(AttestationMethod::parse(&value).with_context(|| {
                        format!("--context attestation={value}: not x509 or oidc")
                    })?);
            }
            "environment" => context.environment = value,
            "source" => {
                context.source = Some(
                    value
                        .parse()
                        .with_context(|| format!("--context source={value}: not an IP address"))?,
                );
            }
            _ => {
                context.labels.insert(key, value);
            }
        }
    }
    let method = method.unwrap_or(if claims.is_empty() {
        AttestationMethod::X509
    } else {
        AttestationMethod::Oidc
    });
    context.attestation = Some(AttestationFacts { method, claims });
    let now = match &args.at {
        Some(text) => humantime::parse_rfc3339_weak(text)
            .with_context(|| format!("--at {text:?}: not an RFC 3339 time"))?,
        None => SystemTime::now(),
    };
    let request = AccessRequest {
        entitlement: args.entitlement.as_deref(),
        actions: &actions,
        ttl: args.ttl,
        justification: &args.justification,
        ticket: &args.ticket,
        audiences: None,
        break_glass: args.break_glass,
        live_grants: &[],
    };
    let mut evaluation =
        jitid::policy::evaluate(&config.catalogue, &caller, &request, &context, now);
    // Explain reads no live grants, so it counted none.
    evaluation.explanation.active_grants = None;
    let explanation = &evaluation.explanation;
    match args.output {
        Output::Json => outln!("{}", serde_json::to_string_pretty(explanation)?),
        Output::Text => {
            outln!("decision     {}", explanation.outcome);
            for rule in &explanation.matched {
                outln!("  matched    {rule}");
            }
            outln!("inputs");
            outln!("  caller     {}", explanation.caller);
            outln!("  groups     {}", explanation.groups.join(" "));
            outln!(
                "  time       {} ({})",
                humantime::format_rfc3339_seconds(now),
                jitid::policy::window::weekday(now)
            );
            for (window, open) in &explanation.windows {
                outln!(
                    "  window     {window}: {}",
                    if *open { "open" } else { "closed" }
                );
            }
            outln!("  environment {:?}", explanation.context.environment);
            if let Some(facts) = &explanation.context.attestation {
                outln!("  attestation {}", facts.method);
                for (claim, value) in &facts.claims {
                    outln!("  claim      {claim}={value}");
                }
            }
            for (key, value) in &explanation.context.labels {
                outln!("  label      {key}={value}");
            }
            outln!("  note       max_active is not counted: explain does not read live grants");
        }
    }
    match evaluation.result {
        Ok(_) => Ok(()),
        Err(denial) => Err(Refused(format!("denied: {denial}")).into()),
    }
}

/// `jitid policy check FILE`: loads a config and reports its catalogue.
fn policy_check(file: &Path, output: Output) -> anyhow::Result<()> {
    let config = Config::load(file)?;
    let entitlements = config.catalogue.entitlements();
    let rows: Vec<CheckedEntitlement<'_>> = entitlements
        .iter()
        .map(|entitlement| CheckedEntitlement {
            name: &entitlement.name,
            risk: entitlement.risk.as_str(),
            default_ttl: humantime::format_duration(entitlement.default_ttl).to_string(),
            max_ttl: humantime::format_duration(entitlement.max_ttl).to_string(),
            approval: match &entitlement.approval {
                jitid::policy::ApprovalRule::Auto => "auto".to_owned(),
                jitid::policy::ApprovalRule::Approvers {
                    names,
                    min_approvals,
                    ..
                } => format!("{min_approvals} of {}", names.join(",")),
            },
            break_glass: entitlement.break_glass.is_some(),
            conditions: entitlement
                .conditions
                .as_ref()
                .map(|conditions| conditions.policy_ids().map(str::to_owned).collect())
                .unwrap_or_default(),
            actions: entitlement.actions.iter().map(|a| a.as_str()).collect(),
        })
        .collect();
    if let Output::Json = output {
        outln!(
            "{}",
            serde_json::json!({
                "file": file,
                "ok": true,
                "entitlements": rows.iter().map(|row| serde_json::json!({
                    "name": row.name,
                    "risk": row.risk,
                    "default_ttl": row.default_ttl,
                    "max_ttl": row.max_ttl,
                    "approval": row.approval,
                    "break_glass": row.break_glass,
                    "conditions": row.conditions,
                    "actions": row.actions,
                })).collect::<Vec<_>>(),
            })
        );
        return Ok(());
    }
    outln!("{}: ok, {} entitlements", file.display(), rows.len());
    for row in &rows {
        outln!(
            "  {:<24} {:<8} ttl {} (max {})  approval {}{}{}  actions {}",
            row.name,
            row.risk,
            row.default_ttl,
            row.max_ttl,
            row.approval,
            if row.break_glass { "  break-glass" } else { "" },
            if row.conditions.is_empty() {
                String::new()
            } else {
                format!("  conditions {}", row.conditions.join(","))
            },
            row.actions.join(" ")
        );
    }
    Ok(())
}

/// One entitlement as `policy check` reports it.
struct CheckedEntitlement<'a> {
    name: &'a str,
    risk: &'a str,
    default_ttl: String,
    max_ttl: String,
    approval: String,
    break_glass: bool,
    conditions: Vec<String>,
    actions: Vec<&'a str>,
}
