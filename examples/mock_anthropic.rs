//! The loopback mock of the Anthropic API, on its own, for `make demo` and for trying the CLI by
//! hand: `cargo run --example mock_anthropic -- --listen 127.0.0.1:3002`.
//!
//! It prints its base URL as the first line on stdout, for scripts, then the settings that point
//! a daemon at its OAuth provider, as `SASHAD__OAUTH__…=value` lines a shell can source (callback
//! mode), and a `#` comment with the settings to add for paste mode:
//!
//! ```text
//! http://127.0.0.1:3002
//! SASHAD__OAUTH__AUTHORIZE_URL=http://127.0.0.1:3002/oauth/authorize
//! SASHAD__OAUTH__TOKEN_URL=http://127.0.0.1:3002/oauth/token
//! SASHAD__OAUTH__CLIENT_ID=sashad-test-client
//! # paste mode: SASHAD__OAUTH__REDIRECT_MODE=paste SASHAD__OAUTH__REDIRECT_URI=http://…/oauth/code
//! ```
//!
//! (and `SASHAD__OAUTH__CLIENT_SECRET` when `--oauth-client-secret` is given). It logs each
//! request on stderr, and runs until Ctrl-C or SIGTERM. Point a client at it with
//! `ANTHROPIC_BASE_URL=<that URL>` and any `ANTHROPIC_API_KEY` that starts with `sk-ant-`. The
//! replies are scripted by markers in the user's text (`TOOL:<cmd>`, `SLOW`, `ECHO`, `BIG:<n>`);
//! see `tests/it/common/mock_api.rs`, which also describes the OAuth provider (its "user"
//! clicks "Allow" at once, so opening the authorize URL in a browser lands on the callback).
//!
//! `--reject CREDENTIAL` makes `/v1/messages` answer 401 to that API key or token (what a revoked
//! key looks like), and `--status CREDENTIAL=CODE` any other status (429, 500, 529, …); both may
//! be repeated. `--oauth-client-id ID` and `--oauth-client-secret SECRET` change the OAuth
//! client (default: a public client `sashad-test-client`), and `--oauth-access-token-ttl 2m`
//! (humantime) makes access tokens short-lived, to watch sashad refresh them.

// The tests' module, shared verbatim so the demo and the tests cannot drift apart; the demo
// uses only part of its API.
#[allow(dead_code)]
#[path = "../tests/it/common/mock_api.rs"]
mod mock_api;

use std::process::ExitCode;

use nix::sys::signal::{SigSet, Signal};

/// The demo's default address: next to sashad's default `127.0.0.1:3001`.
const DEFAULT_LISTEN: &str = "127.0.0.1:3002";

const USAGE: &str = "usage: mock_anthropic [--listen ADDR] [--reject CREDENTIAL]... \
                     [--status CREDENTIAL=CODE]... [--oauth-client-id ID] \
                     [--oauth-client-secret SECRET] [--oauth-access-token-ttl DURATION]   \
                     (ADDR defaults to 127.0.0.1:3002)";

fn main() -> ExitCode {
    let mut listen = DEFAULT_LISTEN.to_owned();
    let mut statuses: Vec<(String, u16)> = Vec::new();
    let mut oauth = mock_api::OAuthConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        let Some(value) = inline.or_else(|| args.next()) else {
            eprintln!("{flag} needs a value\n{USAGE}");
            return ExitCode::from(2);
        };
        match flag.as_str() {
            "--listen" => listen = value,
            "--reject" => statuses.push((value, 401)),
            "--oauth-client-id" => oauth.client_id = value,
            "--oauth-client-secret" => oauth.client_secret = Some(value),
            "--oauth-access-token-ttl" => match humantime::parse_duration(&value) {
                Ok(ttl) => oauth.access_token_ttl = ttl,
                Err(err) => {
                    eprintln!("--oauth-access-token-ttl {value:?}: {err}\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "--status" => match value.rsplit_once('=').map(|(c, s)| (c, s.parse::<u16>())) {
                Some((credential, Ok(code))) => statuses.push((credential.to_owned(), code)),
                _ => {
                    eprintln!("--status wants CREDENTIAL=CODE, got {value:?}\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("unknown argument {arg:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    // Block SIGINT and SIGTERM before the server's threads exist, so that they inherit the
    // mask and the main thread alone takes the signal, synchronously. (With a tokio `ctrl_c()`
    // on a second runtime beside the mock's, a Ctrl-C was once seen to go unnoticed.)
    let mut stop_signals = SigSet::empty();
    stop_signals.add(Signal::SIGINT);
    stop_signals.add(Signal::SIGTERM);
    if let Err(err) = stop_signals.thread_block() {
        eprintln!("mock_anthropic: cannot block SIGINT and SIGTERM: {err}");
        return ExitCode::FAILURE;
    }
    let mock = match mock_api::MockApi::start_on(listen.as_str()) {
        Ok(mock) => mock,
        Err(err) => {
            eprintln!("mock_anthropic: cannot listen on {listen}: {err}");
            return ExitCode::FAILURE;
        }
    };
    mock.set_log_requests(true);
    for (credential, code) in &statuses {
        mock.set_messages_behavior(credential, mock_api::Behavior::Status(*code));
    }
    let client_secret = oauth.client_secret.clone();
    mock.set_oauth_config(oauth);
    println!("{}", mock.base_url());
    println!("SASHAD__OAUTH__AUTHORIZE_URL={}", mock.authorize_url());
    println!("SASHAD__OAUTH__TOKEN_URL={}", mock.token_url());
    println!("SASHAD__OAUTH__CLIENT_ID={}", mock.oauth_client_id());
    if let Some(secret) = client_secret {
        println!("SASHAD__OAUTH__CLIENT_SECRET={secret}");
    }
    println!(
        "# paste mode: SASHAD__OAUTH__REDIRECT_MODE=paste SASHAD__OAUTH__REDIRECT_URI={}",
        mock.paste_redirect_uri()
    );
    eprintln!(
        "mock_anthropic: serving the Anthropic API at {0}; try ANTHROPIC_BASE_URL={0} \
         ANTHROPIC_API_KEY=sk-ant-demo. OAuth provider: authorize {1}, token {2}, client id {3}. \
         Ctrl-C stops it.",
        mock.base_url(),
        mock.authorize_url(),
        mock.token_url(),
        mock.oauth_client_id(),
    );
    let waited = stop_signals.wait();
    drop(mock);
    match waited {
        Ok(signal) => {
            eprintln!("mock_anthropic: {signal}, stopped");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("mock_anthropic: cannot wait for a signal: {err}");
            ExitCode::FAILURE
        }
    }
}
