import io

import pytest
from rich.console import Console

from hypertweaks.display import LiveDisplay


@pytest.mark.parametrize("metric, best_row", [("loss", 1), ("accuracy", 2)])
def test_the_live_table_highlights_the_best_trial_in_the_metric_direction(metric, best_row):
    display = LiveDisplay(metric, console=Console(file=io.StringIO()))
    for number, value in enumerate([0.5, 0.2, 0.9]):
        display.rows.append(
            {"number": number, "state": "complete", "value": value, "recipe": {}, "seconds": 1}
        )
    table = display._render().renderables[0]
    styles = [row.style for row in table.rows]
    assert styles[best_row] == "bold green"
    assert [s for s in styles if s] == ["bold green"]


def test_the_live_table_highlights_the_model_kept_not_the_highest_value():
    # the defaults trial (0.80) is kept over a lead inside the validation noise (0.82)
    display = LiveDisplay("accuracy", console=Console(file=io.StringIO()))
    display.trial_finished({"number": 0, "state": "complete", "value": 0.82, "recipe": {}}, best=0)
    display.trial_finished({"number": 1, "state": "complete", "value": 0.80, "recipe": {}}, best=1)
    styles = [row.style for row in display._render().renderables[0].rows]
    assert styles == [None, "bold green"]
