"""Load a trained segmenter and run it on decoded images: pure torch/numpy, no Ray."""
from __future__ import annotations

import numpy as np
import torch

from inetseg import imaging, storage
from inetseg.models.segmenter import Segmenter
from inetseg.train import utils
from inetseg.train.data import normalise


def load_segmenter(model_dir: str, device: torch.device) -> tuple[Segmenter, dict]:
    """The exported segmenter (eval mode, on `device`) and its meta."""
    meta = storage.read_json(storage.join(model_dir, utils.META_FILE))
    model = Segmenter(meta["num_classes"], meta["width"], tuple(meta["aspp_rates"]))
    model.load_state_dict(torch.load(utils.local_model_file(model_dir), map_location="cpu"))
    return model.to(device).eval(), meta


def predict_logits(model: torch.nn.Module, images: list[np.ndarray], input_size: int,
                   device: torch.device) -> torch.Tensor:
    """Logits N x (K+1) x S x S of the images, each resized (aspect ignored) to S = input_size."""
    x = normalise(np.stack([imaging.resize_square(im, input_size) for im in images]))
    with torch.no_grad():
        return model(torch.from_numpy(x).to(device)).float()


def upsample_probs(logits: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Softmax (K+1) x H x W of one image's (K+1) x S x S logits, at the image's own size."""
    with torch.no_grad():
        lg = torch.nn.functional.interpolate(logits[None], size=(height, width), mode="bilinear",
                                             align_corners=False)[0]
        return torch.softmax(lg, 0).cpu().numpy()


def predict_probs(model: torch.nn.Module, images: list[np.ndarray], input_size: int,
                  device: torch.device) -> list[np.ndarray]:
    """Softmax (K+1) x H x W per image at the image's own size."""
    logits = predict_logits(model, images, input_size, device)
    return [upsample_probs(lg, im.shape[0], im.shape[1]) for lg, im in zip(logits, images)]
