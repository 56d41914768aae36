//! `hookd verify`: checks a webhook's signature offline, for a receiver's own tests and CI, and
//! says why it does not verify ([`crate::verify`]).
//!
//! Exit codes: 0 it verifies; 1 it does not (the reason on stdout); 2 bad usage.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;

use crate::verify::{self, Candidate, Verdict};

// No doc comment: the `verify` variant's own is the command's help.
#[derive(Args)]
pub struct VerifyArgs {
    /// The environment variable that holds the secret (the receiver's WEBHOOK_SECRET).
    #[arg(long, value_name = "NAME")]
    pub secret_env: String,
    /// Another variable with a previous secret to try too (during a rotation).
    #[arg(long, value_name = "NAME")]
    pub previous_secret_env: Option<String>,
    /// A header of the request as the receiver got it, `'Name: value'`; repeat for each.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// The prefix of hookd's headers (`[delivery] header_prefix`).
    #[arg(long, default_value = "X-Abstrakt")]
    pub prefix: String,
    /// The body as the receiver's framework gave it: a file, or `-` for stdin.
    pub body: PathBuf,
}

/// Runs the check and maps its verdict to the exit code.
pub fn run(args: VerifyArgs) -> ExitCode {
    match prepare(&args) {
        Ok((headers, body, secrets)) => {
            let candidates: Vec<Candidate<'_>> = secrets
                .iter()
                .map(|(label, secret)| Candidate { label, secret })
                .collect();
            let now_secs = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            let verdict = verify::check(&verify::Input {
                headers: &headers,
                body: &body,
                secrets: &candidates,
                prefix: &args.prefix,
                now_secs,
                sent: None,
            });
            report(&verdict)
        }
        Err(message) => {
            eprintln!("hookd verify: {message}");
            ExitCode::from(2)
        }
    }
}

/// Prints the verdict: what matched, or why nothing did.
pub fn report(verdict: &Verdict) -> ExitCode {
    match verdict {
        Verdict::Verifies {
            header,
            secret,
            note,
        } => {
            println!("verified: {header} matches under the {secret} secret");
            if let Some(note) = note {
                println!("note: {note}");
            }
            ExitCode::SUCCESS
        }
        Verdict::Fails(failure) => {
            println!("does not verify: {failure}");
            ExitCode::from(1)
        }
    }
}

type Prepared = (Vec<(String, String)>, Vec<u8>, Vec<(&'static str, String)>);

/// The headers, the body and the secrets, or what is wrong with the command line.
fn prepare(args: &VerifyArgs) -> Result<Prepared, String> {
    let headers = args
        .headers
        .iter()
        .map(|h| verify::parse_header(h))
        .collect::<Result<Vec<_>, _>>()?;
    let mut secrets = vec![("given", secret_from(&args.secret_env)?)];
    if let Some(name) = &args.previous_secret_env {
        secrets.push(("previous", secret_from(name)?));
    }
    let mut body = Vec::new();
    if args.body.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut body)
            .map_err(|e| format!("cannot read stdin: {e}"))?;
    } else {
        body = std::fs::read(&args.body)
            .map_err(|e| format!("cannot read {}: {e}", args.body.display()))?;
    }
    Ok((headers, body, secrets))
}

fn secret_from(name: &str) -> Result<String, String> {
    match std::env::var(name) {
        Ok(secret) if !secret.is_empty() => Ok(secret),
        Ok(_) => Err(format!("the environment variable {name} is empty")),
        Err(_) => Err(format!(
            "the environment variable {name} is not set: export it with the secret the receiver uses"
        )),
    }
}
