//! `wquant convert`.

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_g: &super::GlobalArgs, _a: Args) -> anyhow::Result<()> {
    anyhow::bail!("wquant convert is not built yet")
}
