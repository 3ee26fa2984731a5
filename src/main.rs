fn main() {
    if let Err(e) = wquant::cli::main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
