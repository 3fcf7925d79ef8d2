//! The `tqsup` binary: see `tqsup --help`.

fn main() -> std::process::ExitCode {
    tqsup::cli::main()
}
