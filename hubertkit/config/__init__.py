"""Every setting hubertkit reads, in one place: the network (``model``), a training run
(``train``: fairseq's groups), the pipeline (``pipeline``), and how they load (``load``)."""

from hubertkit.config.load import (
           config_dir_default,
           load_config,
           parse_override,
           preset,
           read_yaml_mapping,
)
from hubertkit.config.model import HubertConfig
from hubertkit.config.train import TrainConfig

__all__ = ["HubertConfig", "TrainConfig", "config_dir_default", "load_config", "parse_override", "preset",
           "read_yaml_mapping"]
