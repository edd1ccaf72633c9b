fn main() -> std::process::ExitCode {
    vmm::cli::main()
}
