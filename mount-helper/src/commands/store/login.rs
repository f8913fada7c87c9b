//! `rfs login` and `rfs logout`: credentials checked against the registry and kept in
//! podman's auth.json (see [`rfs_fs::registry::auth`]). The password comes from standard
//! input (`--password-stdin`) or a prompt on the terminal with echo off; it never appears in
//! arguments, logs or messages.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use rfs_fs::registry::Client;
use rfs_fs::registry::auth::{self, Credentials};
use rfs_fs::registry::reference::normalize_registry;

use crate::cli::{LoginArgs, LogoutArgs};

/// Runs `rfs login`.
pub(crate) fn login(args: &LoginArgs) -> Result<ExitCode> {
    let registry = normalize_registry(&args.registry);
    let stdin = std::io::stdin();
    let username = match &args.username {
        Some(u) => u.clone(),
        None if stdin.is_terminal() && !args.password_stdin => {
            eprint!("Username: ");
            let mut line = String::new();
            stdin.lock().read_line(&mut line)?;
            line.trim().to_owned()
        }
        None => bail!("no user name: give --username"),
    };
    if username.is_empty() {
        bail!("the user name is empty");
    }
    let password = if args.password_stdin {
        let mut text = String::new();
        stdin
            .lock()
            .read_to_string(&mut text)
            .context("reading the password from standard input")?;
        text.trim_end_matches(['\n', '\r']).to_owned()
    } else if stdin.is_terminal() {
        prompt_password()?
    } else {
        bail!("no password: pipe it with --password-stdin, or run on a terminal to be asked")
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    let credentials = Credentials::Password { username, password };
    let mut opts = super::pull::client_options(&args.registry_args)?;
    opts.credentials = Some(credentials.clone());
    let client = Client::connect(&registry, None, &opts)
        .with_context(|| format!("logging in to {registry}"))?;
    client
        .check_login()
        .with_context(|| format!("logging in to {registry}"))?;
    let file = auth::default_auth_file();
    auth::store(&file, &registry, &credentials)
        .with_context(|| format!("storing the credentials for {registry}"))?;
    println!("Login Succeeded!");
    Ok(ExitCode::SUCCESS)
}

/// Asks for the password on the terminal with echo off (restored even on error).
fn prompt_password() -> Result<String> {
    use nix::sys::termios::{self, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    let fd = stdin.as_fd();
    let saved = termios::tcgetattr(fd).context("reading the terminal's settings")?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    eprint!("Password: ");
    let _ = std::io::stderr().flush();
    termios::tcsetattr(fd, SetArg::TCSANOW, &quiet).context("turning echo off")?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let _ = termios::tcsetattr(fd, SetArg::TCSANOW, &saved);
    read.context("reading the password")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// Runs `rfs logout`.
pub(crate) fn logout(args: &LogoutArgs) -> Result<ExitCode> {
    let file = auth::default_auth_file();
    let registry = args.registry.as_deref().map(normalize_registry);
    let removed = auth::remove(&file, registry.as_deref())
        .with_context(|| format!("editing {}", file.display()))?;
    match registry {
        None => println!("Removed login credentials for all registries"),
        Some(r) if removed > 0 => println!("Removed login credentials for {r}"),
        Some(r) => bail!("not logged in to {r} (no entry in {})", file.display()),
    }
    Ok(ExitCode::SUCCESS)
}
