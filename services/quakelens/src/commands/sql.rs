//! `quakelens sql`: DataFusion over the lake.

use clap::Args;

use quakelens_lake::{Lake, LakeLocation};

use super::{parse_lake, DEFAULT_LAKE};

#[derive(Args, Debug)]
pub struct SqlArgs {
    /// The SQL statement, e.g. "SELECT count(*) FROM windows".
    query: String,
    /// The lake: a directory or s3://bucket/prefix.
    #[arg(long, env = "QUAKELENS_LAKE", default_value = DEFAULT_LAKE, value_parser = parse_lake)]
    lake: LakeLocation,
}

pub fn run(args: SqlArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let lake = Lake::open(&args.lake).await?;
        println!("{}", lake.sql_table(&args.query).await?);
        Ok(())
    })
}
