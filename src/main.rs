fn main() -> std::process::ExitCode {
    crm_graph_connector::cli::main()
}
