//! The `vpcrouter` binary: parse, run, exit with the run's status.
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(vpcrouter::run::main(std::env::args().collect()));
}
