//! `quakelens plot`: PNG figures of the lake's explanations — a window's spectrogram with its
//! CNN SHAP map, class-mean SHAP maps (the study's Figure 3, also in its own normalisation), and
//! the forest's beeswarm, decision plot and waterfall. Reads with SQL, draws with
//! `quakelens-plot`.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type};
use clap::{Args, Subcommand, ValueEnum};

use quakelens_lake::{Lake, LakeLocation};
use quakelens_pipeline::transform::spectrogram_axes;
use quakelens_plot::figures::{self, short_hash, ClassMap, Contribution, ForestValues, Grid};
use quakelens_plot::Canvas;

use super::{literal, parse_lake, runtime, DEFAULT_LAKE};

#[derive(Subcommand, Debug)]
pub enum PlotCommand {
    /// One window's spectrogram beside its CNN SHAP values (needs `quakelens explain`).
    Window(WindowArgs),
    /// Mean CNN SHAP map per class, one row per channel (the study's Figure 3).
    ClassMeans(ClassMeansArgs),
    /// The forest's SHAP summary: one row of windows per feature, coloured by feature value.
    Beeswarm(BeeswarmArgs),
    /// How one window's features move its predicted magnitude from the base value.
    Waterfall(WaterfallArgs),
    /// The forest's decision plot: each window's path from the base value to its prediction.
    Decision(DecisionArgs),
    /// One window's waveform-CNN explanation: each channel over its time segments' values, and
    /// the frequency bands' values (needs `quakelens explain` with a CONV1D model).
    Waveform(WaveformArgs),
}

#[derive(Args, Debug)]
pub struct WaveformArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long)]
    window_id: String,
}

#[derive(Args, Debug)]
pub struct Common {
    #[arg(long, env = "QUAKELENS_LAKE", default_value = DEFAULT_LAKE, value_parser = parse_lake)]
    lake: LakeLocation,
    /// The PNG to write.
    #[arg(long, short)]
    out: PathBuf,
    /// Model hash (or its start) when the lake holds explanations of several models.
    #[arg(long)]
    model: Option<String>,
}

#[derive(Args, Debug)]
pub struct WindowArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long)]
    window_id: String,
    /// Which explanation method's values (`partition`, `gradient`, `exact16`).
    #[arg(long, default_value = "partition")]
    method: String,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ClassBy {
    /// The catalogue label (foreshock / aftershock).
    Label,
    /// The CNN's predicted class.
    Predicted,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum MeanOf {
    /// Raw values averaged per channel over the class's windows.
    Values,
    /// The study's maps: only correctly predicted windows, each value divided by the largest
    /// of its explanation batch (`batch`, or the window alone), averaged over channels and
    /// then over windows: one frequency × time map per class.
    Study,
}

#[derive(Args, Debug)]
pub struct ClassMeansArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value = "partition")]
    method: String,
    #[arg(long, value_enum, default_value_t = ClassBy::Label)]
    by: ClassBy,
    /// What is averaged (`study` ignores --by: the class is the label, predicted correctly).
    #[arg(long, value_enum, default_value_t = MeanOf::Values)]
    mode: MeanOf,
}

#[derive(Args, Debug)]
pub struct BeeswarmArgs {
    #[command(flatten)]
    common: Common,
    /// Features shown (largest mean |SHAP| first).
    #[arg(long, default_value_t = 20)]
    top: usize,
    /// At most this many windows (in window-id order).
    #[arg(long, default_value_t = 5000)]
    limit: usize,
    /// Only windows matching this SQL condition on `w` (windows), e.g. the study's high- and
    /// low-magnitude summaries: `--filter "w.magnitude >= 3"`.
    #[arg(long)]
    filter: Option<String>,
}

#[derive(Args, Debug)]
pub struct DecisionArgs {
    #[command(flatten)]
    common: Common,
    /// Features shown (largest mean |SHAP| first); the rest share one row.
    #[arg(long, default_value_t = 20)]
    top: usize,
    /// At most this many windows (in window-id order), one line each.
    #[arg(long, default_value_t = 200)]
    limit: usize,
    /// Only windows matching this SQL condition on `w` (windows).
    #[arg(long)]
    filter: Option<String>,
}

#[derive(Args, Debug)]
pub struct WaterfallArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long)]
    window_id: String,
    /// Features shown; the rest are summed in one bar.
    #[arg(long, default_value_t = 12)]
    top: usize,
}

pub fn run(command: PlotCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let (common, canvas) = match command {
            PlotCommand::Window(a) => {
                let c = window(&a).await?;
                (a.common, c)
            }
            PlotCommand::ClassMeans(a) => {
                let c = class_means(&a).await?;
                (a.common, c)
            }
            PlotCommand::Beeswarm(a) => {
                let c = beeswarm(&a).await?;
                (a.common, c)
            }
            PlotCommand::Waterfall(a) => {
                let c = waterfall(&a).await?;
                (a.common, c)
            }
            PlotCommand::Decision(a) => {
                let c = decision(&a).await?;
                (a.common, c)
            }
            PlotCommand::Waveform(a) => {
                let c = waveform(&a).await?;
                (a.common, c)
            }
        };
        canvas.save(&common.out)?;
        println!(
            "wrote {} ({} × {} pixels)",
            common.out.display(),
            canvas.width(),
            canvas.height()
        );
        Ok(())
    })
}

async fn open(lake: &LakeLocation) -> anyhow::Result<Lake> {
    Ok(Lake::open(lake).await?)
}

async fn sql(lake: &Lake, query: &str) -> anyhow::Result<Vec<RecordBatch>> {
    lake.sql(query)
        .await
        .with_context(|| format!("query failed: {query}"))
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> anyhow::Result<&'a dyn Array> {
    batch
        .column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| anyhow!("the lake's answer has no column {name}"))
}

/// A column of every batch as f64 (nulls become NaN).
fn floats(batches: &[RecordBatch], name: &str) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::new();
    for b in batches {
        let col = arrow::compute::cast(column(b, name)?, &DataType::Float64)?;
        let col = col.as_primitive::<arrow::datatypes::Float64Type>();
        out.extend((0..col.len()).map(|i| {
            if col.is_null(i) {
                f64::NAN
            } else {
                col.value(i)
            }
        }));
    }
    Ok(out)
}

/// A column of every batch as text (nulls become "").
fn texts(batches: &[RecordBatch], name: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for b in batches {
        let col = arrow::compute::cast(column(b, name)?, &DataType::Utf8)?;
        let col = col.as_string::<i32>();
        out.extend((0..col.len()).map(|i| col.value(i).to_string()));
    }
    Ok(out)
}

/// The one model whose rows `table` holds under `condition`, narrowed by `--model`.
async fn model_of(
    lake: &Lake,
    table: &str,
    condition: &str,
    given: &Option<String>,
) -> anyhow::Result<String> {
    let q =
        format!("SELECT DISTINCT model_hash FROM {table} WHERE {condition} ORDER BY model_hash");
    let all = texts(&sql(lake, &q).await?, "model_hash")?;
    let wanted: Vec<&String> = match given {
        Some(m) => all
            .iter()
            .filter(|h| h.starts_with(m.as_str()) || short_hash(h).starts_with(m.as_str()))
            .collect(),
        None => all.iter().collect(),
    };
    match wanted.as_slice() {
        [one] => Ok((*one).clone()),
        [] if all.is_empty() => bail!("{table} has no rows where {condition}"),
        [] => bail!(
            "no model matching --model {} in {table}; it holds {}",
            given.as_deref().unwrap_or(""),
            all.join(", ")
        ),
        many => bail!(
            "{table} holds rows of {} models there ({}); choose one with --model",
            many.len(),
            many.iter()
                .map(|h| short_hash(h))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The spectrogram grid of the lake, channels named after the window's channel order.
fn grid(lake: &Lake, channel_order: &str) -> anyhow::Result<Grid> {
    let format = lake
        .format()
        .with_context(|| format!("no windows in the lake at {}", lake.location()))?;
    let axes = spectrogram_axes(format.shape).map_err(anyhow::Error::msg)?;
    let names: Vec<char> = channel_order.chars().collect();
    Ok(Grid {
        channels: (0..axes.channels)
            .map(|c| match names.get(c) {
                Some(n) if names.len() == axes.channels => format!("channel {n}"),
                _ => format!("channel {c}"),
            })
            .collect(),
        freqs_hz: axes.freqs_hz,
        times_s: axes.times_s,
    })
}

/// The batch holding window `window_id`'s `columns` (ids are unique: its first row), or an
/// error naming the lake.
async fn window_row(
    lake: &Lake,
    common: &Common,
    window_id: &str,
    columns: &str,
) -> anyhow::Result<RecordBatch> {
    let q = format!(
        "SELECT {columns} FROM windows WHERE window_id = {}",
        literal(window_id)
    );
    let rows = sql(lake, &q).await?;
    match rows.into_iter().find(|b| b.num_rows() > 0) {
        Some(row) => Ok(row),
        None => bail!("no window {window_id} in the lake at {}", common.lake),
    }
}

/// The first row's `List<Float32>` column `name`.
fn float_list(row: &RecordBatch, name: &str) -> anyhow::Result<Vec<f32>> {
    let list = column(row, name)?.as_list::<i32>().value(0);
    Ok(list.as_primitive::<Float32Type>().values().to_vec())
}

async fn window(a: &WindowArgs) -> anyhow::Result<Canvas> {
    let lake = open(&a.common.lake).await?;
    let id = literal(&a.window_id);
    let row = window_row(
        &lake,
        &a.common,
        &a.window_id,
        "station, channel_order, spectrogram",
    )
    .await?;
    let station = texts(std::slice::from_ref(&row), "station")?.remove(0);
    let order = texts(std::slice::from_ref(&row), "channel_order")?.remove(0);
    let spectrogram = float_list(&row, "spectrogram")?;

    let condition = format!("window_id = {id} AND method = {}", literal(&a.method));
    let model = model_of(&lake, "cnn_shap", &condition, &a.common.model).await?;
    let q = format!(
        "SELECT budget, seed, output, base_value, value FROM cnn_shap \
         WHERE {condition} AND model_hash = {} ORDER BY channel, freq_hz, time_s",
        literal(&model)
    );
    let shap_rows = sql(&lake, &q).await?;
    let shap: Vec<f32> = floats(&shap_rows, "value")?
        .iter()
        .map(|v| *v as f32)
        .collect();
    let budget = floats(&shap_rows, "budget")?;
    let output = floats(&shap_rows, "output")?;
    let base = floats(&shap_rows, "base_value")?;
    let grid = grid(&lake, &order)?;
    let score = if lake.has(quakelens_lake::Table::Scores) {
        sql(
            &lake,
            &format!(
                "SELECT p_aftershock FROM scores WHERE window_id = {id} AND model_hash = {}",
                literal(&model)
            ),
        )
        .await?
    } else {
        Vec::new()
    };
    let p = floats(&score, "p_aftershock")?.first().copied();
    let heading = format!(
        "{} {station}  {}{} {} evals  f(x)={:.3} base={:.3}",
        a.window_id,
        p.map(|p| format!("p(aftershock)={p:.3}  "))
            .unwrap_or_default(),
        a.method,
        budget.first().copied().unwrap_or(f64::NAN),
        output.first().copied().unwrap_or(f64::NAN),
        base.first().copied().unwrap_or(f64::NAN),
    );
    Ok(figures::window_overlay(
        &grid,
        &heading,
        &spectrogram,
        &shap,
    )?)
}

async fn waveform(a: &WaveformArgs) -> anyhow::Result<Canvas> {
    let lake = open(&a.common.lake).await?;
    if lake.format().is_some_and(|f| f.waveform.is_none()) {
        bail!(
            "the lake at {} stores no waveforms (it was not made with --waveforms)",
            a.common.lake
        );
    }
    let id = literal(&a.window_id);
    let row = window_row(&lake, &a.common, &a.window_id, "channel_order, waveform").await?;
    let order = texts(std::slice::from_ref(&row), "channel_order")?.remove(0);
    let samples = float_list(&row, "waveform")?;
    let condition = format!("window_id = {id}");
    let model = model_of(&lake, "waveform_shap", &condition, &a.common.model).await?;
    let cells = |method: &str, order_by: &str| {
        format!(
            "SELECT target, budget, output, base_value, channel, start_s, end_s, low_hz, high_hz, value \
             FROM waveform_shap WHERE {condition} AND model_hash = {} AND method = '{method}' \
             ORDER BY {order_by}",
            literal(&model)
        )
    };
    let time = sql(&lake, &cells("partition", "channel, start_s")).await?;
    let bands = sql(&lake, &cells("bandstop", "low_hz")).await?;
    let (channel, start, end, value) = (
        floats(&time, "channel")?,
        floats(&time, "start_s")?,
        floats(&time, "end_s")?,
        floats(&time, "value")?,
    );
    let names: Vec<char> = order.chars().collect();
    let per_channel = samples.len() / names.len().max(1);
    let traces: Vec<figures::ChannelTrace> = names
        .iter()
        .enumerate()
        .map(|(c, name)| figures::ChannelTrace {
            name: name.to_string(),
            samples: samples[c * per_channel..(c + 1) * per_channel].to_vec(),
            segments: (0..value.len())
                .filter(|&i| channel[i] == c as f64)
                .map(|i| (start[i], end[i], value[i]))
                .collect(),
        })
        .collect();
    let (low, high, band_value) = (
        floats(&bands, "low_hz")?,
        floats(&bands, "high_hz")?,
        floats(&bands, "value")?,
    );
    let band_values: Vec<figures::BandValue> = (0..band_value.len())
        .map(|i| (low[i], high[i], band_value[i]))
        .collect();
    let target = texts(&time, "target")?;
    // Short enough for the figure's width at title size.
    let heading = format!(
        "{} {} f={:.3} base={:.3}",
        a.window_id,
        target.first().map_or("", String::as_str),
        floats(&time, "output")?
            .first()
            .copied()
            .unwrap_or(f64::NAN),
        floats(&time, "base_value")?
            .first()
            .copied()
            .unwrap_or(f64::NAN),
    );
    Ok(figures::waveform_explanation(
        &traces,
        quakelens_signal::TARGET_RATE_HZ,
        &band_values,
        &heading,
    )?)
}

async fn class_means(a: &ClassMeansArgs) -> anyhow::Result<Canvas> {
    let lake = open(&a.common.lake).await?;
    let method = literal(&a.method);
    let model = model_of(
        &lake,
        "cnn_shap",
        &format!("method = {method}"),
        &a.common.model,
    )
    .await?;
    if let MeanOf::Study = a.mode {
        return study_class_means(&lake, a, &model).await;
    }
    let classes = match a.by {
        ClassBy::Label => "SELECT window_id, CASE label WHEN 1 THEN 'aftershock' \
                           ELSE 'foreshock' END AS class FROM windows WHERE label IN (0, 1)"
            .to_string(),
        ClassBy::Predicted => format!(
            "SELECT window_id, predicted_class AS class FROM scores WHERE model_hash = {}",
            literal(&model)
        ),
    };
    let q = format!(
        "SELECT k.class, c.channel, c.freq_hz, c.time_s, avg(c.value) AS mean, \
         count(DISTINCT c.window_id) AS windows \
         FROM cnn_shap c JOIN ({classes}) k ON c.window_id = k.window_id \
         WHERE c.method = {method} AND c.model_hash = {} \
         GROUP BY k.class, c.channel, c.freq_hz, c.time_s \
         ORDER BY k.class DESC, c.channel, c.freq_hz, c.time_s",
        literal(&model)
    );
    let rows = sql(&lake, &q).await?;
    let class = texts(&rows, "class")?;
    let mean = floats(&rows, "mean")?;
    let windows = floats(&rows, "windows")?;
    let order = texts(
        &sql(&lake, "SELECT channel_order FROM windows LIMIT 1").await?,
        "channel_order",
    )?;
    let grid = grid(&lake, order.first().map_or("", String::as_str))?;
    let maps = class_maps(&class, &mean, &windows);
    if maps.is_empty() {
        bail!(
            "no {} windows have {} explanations of model {}",
            match a.by {
                ClassBy::Label => "labelled",
                ClassBy::Predicted => "scored",
            },
            a.method,
            short_hash(&model)
        );
    }
    let heading = format!(
        "mean {} SHAP by {} class, CNN {}",
        a.method,
        match a.by {
            ClassBy::Label => "catalogue",
            ClassBy::Predicted => "predicted",
        },
        short_hash(&model)
    );
    Ok(figures::class_means(&grid, &heading, &maps)?)
}

/// The study's class maps (`--mode study`): correctly predicted windows of each class, values
/// over their batch's maximum, mean over channels, then over windows.
async fn study_class_means(lake: &Lake, a: &ClassMeansArgs, model: &str) -> anyhow::Result<Canvas> {
    let (method, model_lit) = (literal(&a.method), literal(model));
    let q = format!(
        "WITH c AS (SELECT window_id, coalesce(batch, window_id) AS batch, freq_hz, time_s, value \
                    FROM cnn_shap WHERE method = {method} AND model_hash = {model_lit}), \
              top AS (SELECT batch, max(value) AS top FROM c GROUP BY batch), \
              correct AS (SELECT s.window_id, s.predicted_class AS class FROM scores s \
                          JOIN windows w ON s.window_id = w.window_id \
                          WHERE s.model_hash = {model_lit} AND w.label = s.predicted_index) \
         SELECT k.class, c.freq_hz, c.time_s, avg(c.value / top.top) AS mean, \
                count(DISTINCT c.window_id) AS windows \
         FROM c JOIN top ON c.batch = top.batch JOIN correct k ON c.window_id = k.window_id \
         GROUP BY k.class, c.freq_hz, c.time_s ORDER BY k.class DESC, c.freq_hz, c.time_s"
    );
    let rows = sql(lake, &q).await?;
    let class = texts(&rows, "class")?;
    let mean = floats(&rows, "mean")?;
    let windows = floats(&rows, "windows")?;
    let full = grid(lake, "")?;
    let grid = Grid {
        channels: vec!["mean of the channels".into()],
        ..full
    };
    let maps = class_maps(&class, &mean, &windows);
    if maps.is_empty() {
        bail!(
            "no correctly predicted window has {} explanations of model {} (run quakelens score and quakelens explain first)",
            a.method,
            short_hash(model)
        );
    }
    let heading = format!(
        "study class maps ({}, values / batch maximum), CNN {}",
        a.method,
        short_hash(model)
    );
    Ok(figures::class_means(&grid, &heading, &maps)?)
}

/// Rows of (class, mean, windows) in class order → one map per class.
fn class_maps(class: &[String], mean: &[f64], windows: &[f64]) -> Vec<ClassMap> {
    let mut maps: Vec<ClassMap> = Vec::new();
    for ((c, m), n) in class.iter().zip(mean).zip(windows) {
        if maps.last().is_none_or(|last| &last.label != c) {
            maps.push(ClassMap {
                label: c.clone(),
                windows: 0,
                values: Vec::new(),
            });
        }
        let last = maps.last_mut().expect("just pushed");
        last.values.push(*m as f32);
        last.windows = last.windows.max(*n as usize);
    }
    maps
}

/// Feature values of `windows` keyed by (window, feature), from the wide `features` table.
async fn feature_values(
    lake: &Lake,
    window_filter: &str,
) -> anyhow::Result<HashMap<(String, String), f64>> {
    let rows = sql(
        lake,
        &format!("SELECT * FROM features WHERE window_id IN ({window_filter})"),
    )
    .await?;
    let mut out = HashMap::new();
    for b in &rows {
        let ids = texts(std::slice::from_ref(b), "window_id")?;
        for field in b.schema().fields() {
            if !matches!(field.data_type(), DataType::Float64 | DataType::Float32) {
                continue; // identity columns
            }
            let values = floats(std::slice::from_ref(b), field.name())?;
            for (id, v) in ids.iter().zip(values) {
                out.insert((id.clone(), field.name().clone()), v);
            }
        }
    }
    Ok(out)
}

/// The forest's SHAP and feature values of the first `limit` explained windows (in window-id
/// order) that match `filter` (SQL on `w`, the windows table), with the base value.
async fn forest_values(
    lake: &Lake,
    model: &str,
    filter: Option<&str>,
    limit: usize,
) -> anyhow::Result<(ForestValues, usize, f64)> {
    let restrict = filter.map_or(String::new(), |f| {
        format!(" AND window_id IN (SELECT w.window_id FROM windows w WHERE {f})")
    });
    let chosen = format!(
        "SELECT DISTINCT window_id FROM forest_shap WHERE model_hash = {}{restrict} \
         ORDER BY window_id LIMIT {limit}",
        literal(model),
    );
    let rows = sql(
        lake,
        &format!(
            "SELECT window_id, feature, value, base_value FROM forest_shap \
             WHERE model_hash = {} AND window_id IN ({chosen}) ORDER BY window_id",
            literal(model)
        ),
    )
    .await?;
    let ids = texts(&rows, "window_id")?;
    if ids.is_empty() {
        bail!(
            "no window{} has forest SHAP values of model {}",
            filter.map_or(String::new(), |f| format!(" matching {f}")),
            short_hash(model)
        );
    }
    let names = texts(&rows, "feature")?;
    let shap = floats(&rows, "value")?;
    let base = floats(&rows, "base_value")?[0];
    let mut features: Vec<String> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for n in &names {
        if !index.contains_key(n) {
            index.insert(n.clone(), features.len());
            features.push(n.clone());
        }
    }
    let mut windows: Vec<String> = ids.clone();
    windows.dedup();
    let row_of: HashMap<&str, usize> = windows
        .iter()
        .enumerate()
        .map(|(i, w)| (w.as_str(), i))
        .collect();
    let m = features.len();
    let mut grid_shap = vec![f64::NAN; windows.len() * m];
    for ((id, name), v) in ids.iter().zip(&names).zip(&shap) {
        grid_shap[row_of[id.as_str()] * m + index[name]] = *v;
    }
    let known = feature_values(lake, &chosen).await?;
    let values: Vec<f64> = windows
        .iter()
        .flat_map(|w| {
            features
                .iter()
                .map(|f| {
                    known
                        .get(&(w.clone(), f.clone()))
                        .copied()
                        .unwrap_or(f64::NAN)
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let data = ForestValues {
        features,
        shap: grid_shap,
        values,
    };
    Ok((data, windows.len(), base))
}

/// " (where …)" for headings of filtered figures.
fn subset(filter: &Option<String>) -> String {
    filter
        .as_ref()
        .map_or(String::new(), |f| format!(" where {f}"))
}

async fn beeswarm(a: &BeeswarmArgs) -> anyhow::Result<Canvas> {
    let lake = open(&a.common.lake).await?;
    let model = model_of(&lake, "forest_shap", "true", &a.common.model).await?;
    let (data, windows, _) = forest_values(&lake, &model, a.filter.as_deref(), a.limit).await?;
    let heading = format!(
        "forest SHAP, {windows} windows{}, model {}",
        subset(&a.filter),
        short_hash(&model)
    );
    Ok(figures::beeswarm(&data, &heading, a.top)?)
}

async fn decision(a: &DecisionArgs) -> anyhow::Result<Canvas> {
    let lake = open(&a.common.lake).await?;
    let model = model_of(&lake, "forest_shap", "true", &a.common.model).await?;
    let (data, windows, base) = forest_values(&lake, &model, a.filter.as_deref(), a.limit).await?;
    let heading = format!(
        "forest decision plot, {windows} windows{}, model {}",
        subset(&a.filter),
        short_hash(&model)
    );
    Ok(figures::decision(&data, base, &heading, a.top)?)
}

async fn waterfall(a: &WaterfallArgs) -> anyhow::Result<Canvas> {
    let lake = open(&a.common.lake).await?;
    let id = literal(&a.window_id);
    let condition = format!("window_id = {id}");
    let model = model_of(&lake, "forest_shap", &condition, &a.common.model).await?;
    let rows = sql(
        &lake,
        &format!(
            "SELECT feature, value, base_value FROM forest_shap \
             WHERE {condition} AND model_hash = {} ORDER BY feature",
            literal(&model)
        ),
    )
    .await?;
    let names = texts(&rows, "feature")?;
    let shap = floats(&rows, "value")?;
    let base = floats(&rows, "base_value")?[0];
    let known = feature_values(&lake, &id).await?;
    let contributions: Vec<Contribution> = names
        .iter()
        .zip(&shap)
        .map(|(f, s)| Contribution {
            feature: f.clone(),
            value: known
                .get(&(a.window_id.clone(), f.clone()))
                .copied()
                .unwrap_or(f64::NAN),
            shap: *s,
        })
        .collect();
    let info = sql(
        &lake,
        &format!("SELECT station, magnitude FROM windows WHERE window_id = {id}"),
    )
    .await?;
    let station = texts(&info, "station")?
        .first()
        .cloned()
        .unwrap_or_default();
    let catalogue = floats(&info, "magnitude")?
        .first()
        .copied()
        .filter(|m| m.is_finite())
        .map(|m| format!("  catalogue M {m:.2}"))
        .unwrap_or_default();
    let heading = format!(
        "{} {station}  magnitude forest {}{catalogue}",
        a.window_id,
        short_hash(&model)
    );
    Ok(figures::waterfall(base, &contributions, &heading, a.top)?)
}

#[cfg(test)]
mod tests {
    use super::literal;

    #[test]
    fn literals_escape_quotes() {
        assert_eq!(literal("a'b"), "'a''b'");
    }
}
