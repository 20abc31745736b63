"""Encrypted inference (CKKS over TenSEAL): the client encrypts, the server computes on what it cannot read, only the
client decrypts. Parameters are chosen by the HE standard's tables (:mod:`.params`); a linear model runs in two
packings, chosen by the client from the batch size (:mod:`.linear`)."""

from bastion.defenses.encrypted.client import EncryptedAnswer, EncryptedClient, EncryptedQuery
from bastion.defenses.encrypted.linear import LinearWeights, linear_weights
from bastion.defenses.encrypted.mlp import PolyActivation, PolyMLPWeights, convert_mlp
from bastion.defenses.encrypted.params import CkksParameters, choose_parameters
from bastion.defenses.encrypted.server import EncryptedLinearServer, EncryptedMLPServer

__all__ = [
    "CkksParameters",
    "EncryptedAnswer",
    "EncryptedClient",
    "EncryptedLinearServer",
    "EncryptedMLPServer",
    "EncryptedQuery",
    "LinearWeights",
    "PolyActivation",
    "PolyMLPWeights",
    "choose_parameters",
    "convert_mlp",
    "linear_weights",
]
