"""Fixtures shared by the dashboard tests. The browser ones are defined once for every dashboard
test module: a session-scoped fixture imported into two modules is two fixtures, and a second
Playwright started in the same thread while the first runs fails ("Sync API inside the asyncio
loop"). ``model_tables`` writes what the leaderboard and drift charts show."""

import pytest

from tests.dashboards.browser import (  # noqa: F401 - fixtures
    browser_fixture,
    page_fixture,
    screenshot_dir_fixture,
    urls_fixture,
)


@pytest.fixture(scope="session")
def model_tables(live_market: object) -> list[str]:
    """Walk-forward scores and a drift check of the first symbol of each dashboard section (the
    symbols the dashboard's filters show first), in the live keyspace: the demo's few minutes of
    bars are far too short to train a model, so an mlp is trained on 3,200 minutes of simulated
    GBM bars and scored beside the GBM family by the real training code, and the simulated
    recent bars (twice the volatility) are checked against them by the real drift code; the real
    writers store both. Upserts: a rerun rewrites the same model_scores rows."""
    import os
    from datetime import UTC, datetime, timedelta

    from gbm_analysis import mlp
    from gbm_analysis.drift import check_drift, retrain_symbols
    from gbm_analysis.drift_job import write_drift
    from gbm_analysis.io import GbmStore
    from gbm_analysis.learned import prepare_minutes
    from gbm_analysis.train_job import score_table_rows, write_scores
    from gbm_analysis.training import TrainSettings, train_symbol
    from infra.superset import configured_symbols, split_symbols
    from schemas.runtime.cassandra import connect
    from schemas.settings import CassandraSettings
    from tests.gbm_analysis.test_learned import gbm_minutes

    crypto, stocks = split_symbols(configured_symbols(os.environ))
    symbols = [s[0] for s in (crypto, stocks) if s]
    settings = TrainSettings(
        models=("mlp",),
        train_minutes=1_500,
        calib_minutes=800,
        test_minutes=600,
        mlp=mlp.MlpParams(max_iter=5),
    )
    cassandra = CassandraSettings.from_env()
    cluster, session = connect(cassandra, keyspace=cassandra.keyspace)
    try:
        store = GbmStore(session, cassandra.keyspace)
        now = datetime.now(UTC).replace(microsecond=0)
        for k, symbol in enumerate(symbols):
            history = gbm_minutes(3_200, seed=70 + k)
            results = [(o, None) for o in train_symbol(symbol, history, settings)]
            write_scores(store, score_table_rows(results, evaluated_at=now))
            recent = gbm_minutes(360, seed=80 + k, sigma_bps=16.0)
            checked = check_drift(symbol, "mlp", prepare_minutes(history), prepare_minutes(recent))
            write_drift(
                store,
                checked,
                checked_at=now - timedelta(seconds=k),
                versions={},
                retrained=retrain_symbols(checked),
            )
    finally:
        cluster.shutdown()
    return symbols
