"""YAML in, JSON out, with two compiled dependencies from requirements.txt: PyYAML's C loader
(libyaml) and orjson (Rust)."""

import orjson
import yaml


def main(event, context):
    document = yaml.load(event.get("yaml", ""), Loader=yaml.CLoader)
    return {
        "json": orjson.dumps(document, option=orjson.OPT_SORT_KEYS).decode(),
        "loader": yaml.CLoader.__name__,
        "orjson": orjson.__version__,
    }
