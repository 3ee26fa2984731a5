//! `wquant inspect`.

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_g: &super::GlobalArgs, _a: Args) -> anyhow::Result<()> {
    anyhow::bail!("wquant inspect is not built yet")
}
