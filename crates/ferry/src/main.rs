//! The `ferry` binary: the server and its command-line client.
//!
//! Exit codes: 0 success; 1 the operation failed (the message says why); 2 the command
//! line is invalid; 3 the server could not be reached.

mod alloc;
mod cli;
mod commands;
mod output;
mod security;
mod serve;
mod settings;
mod shared_auth;
mod sources;
mod subs;
mod time;
mod traces;

use clap::Parser;
use cli::{Cli, Command};
use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: alloc::FerryAlloc = alloc::FerryAlloc;

fn main() -> ExitCode {
    alloc::limit_malloc_arenas();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(settings::resolve(*args)?).await,
            Command::Topic(cmd) => commands::topic(cmd).await,
            Command::Produce(args) => commands::produce(args).await,
            Command::Consume(args) => commands::consume(args).await,
            Command::Sub(cmd) => subs::sub(*cmd).await,
            Command::User(cmd) => security::user(cmd).await,
            Command::Token(cmd) => security::token(cmd).await,
            Command::Acl(cmd) => security::acl(cmd).await,
            Command::Source(cmd) => sources::source(*cmd).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed pipe (`ferry consume | head`) is not an error.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            let unreachable = e.chain().any(|c| {
                matches!(
                    c.downcast_ref::<ferry_client::ClientError>(),
                    Some(ferry_client::ClientError::Unreachable { .. })
                )
            });
            eprintln!("error: {e:#}");
            ExitCode::from(if unreachable { 3 } else { 1 })
        }
    }
}
