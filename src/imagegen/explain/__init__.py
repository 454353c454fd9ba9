"""Explanations as pictures: attributions (captum), feature maps and filters, classifier mistakes, and for
generators the denoising trajectory, latent walks, the guidance scale and nearest training images."""

from .attribution import ATTRIBUTIONS, ScalarOutput, attribute, conv_layers, find_layer, target_logit
from .features import feature_maps, first_filters, mistakes
from .generative import Trajectory, class_sweep, guidance_sweep, latent_walk, nearest_training, slerp, trajectory

__all__ = ["ATTRIBUTIONS", "ScalarOutput", "Trajectory", "attribute", "class_sweep", "conv_layers", "feature_maps",
           "find_layer", "first_filters", "guidance_sweep", "latent_walk", "mistakes", "nearest_training", "slerp",
           "target_logit", "trajectory"]
