//! `tidemark`: the disaster-recovery storage service and its CLI.

mod cli;
mod client;
mod commands;
mod config;
mod exit;
mod http;
mod service;
mod site;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(commands::run(args)) {
        eprintln!("error: {}", exit::describe(&e));
        std::process::exit(exit::code(&e));
    }
}
