//! The `berth` binary: everything lives in `berth-app`.

fn main() -> std::process::ExitCode {
    berth_app::cli::main()
}
