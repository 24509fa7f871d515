fn main() -> std::process::ExitCode {
    plexus_agent::cli::main()
}
