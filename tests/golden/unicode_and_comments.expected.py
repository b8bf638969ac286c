# -*- coding: utf-8 -*-
"""Modèle récurrent « météo » : identifiants, chaînes et commentaires non ASCII.

Le fichier utilise des fins de ligne CRLF (Windows) ; elles doivent rester telles quelles.
"""

import jax
import jax.numpy as jnp

# clés des paramètres — accentuées exprès
CLÉ_ENTRÉE = "poids_entrée"
CLÉ_ÉTAT = "poids_état"


def activation(z, α=0.1):
    """Leaky tanh : tanh(z) + α·z."""
    return jnp.tanh(z) + α * z


def _prévision_step(carry, températures_τ):  # τ = pas de temps
    état, paramètres = carry
    # ① entrée du pas τ
    entrée = températures_τ @ paramètres[CLÉ_ENTRÉE]
    # ② récurrence
    état = activation(entrée + état @ paramètres[CLÉ_ÉTAT])  # « cellule »
    return (état, paramètres), état
    # ③ fin du pas — rien d'autre ici


def prévision(paramètres, températures, état):
    """températures : [T, B, D] ; état : [B, H] → (état final, états [T, B, H])."""
    # Σ des états au fil du temps ↓
    # boucle sur le temps ⏱
    (état, _), historique = jax.lax.scan(
        _prévision_step,
        (état, paramètres),
        températures,
    )
    # après la boucle : on empile ✓
    return état, historique


class Thermomètre:
    """Lissage exponentiel ; le nom de la classe est accentué lui aussi."""

    def __init__(self, β):
        self.β = β

    def lisser(self, mesures):
        niveau = jnp.zeros(mesures.shape[1:])

        def _lisser_step(niveau, mesure):  # 🌡 une mesure par pas
            niveau = self.β * niveau + (1 - self.β) * mesure  # moyenne mobile
            return niveau, None

        niveau, _ = jax.lax.scan(_lisser_step, niveau, mesures)
        return niveau


@jax.jit
def lisser(mesures):
    return Thermomètre(0.6).lisser(mesures)


def example_inputs():
    T, B, D, H = 5, 2, 3, 4
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(15), 4)
    paramètres = {
        CLÉ_ENTRÉE: jax.random.normal(k1, (D, H)),
        CLÉ_ÉTAT: 0.5 * jax.random.normal(k2, (H, H)),
    }
    températures = jax.random.normal(k3, (T, B, D))
    état = jax.random.normal(k4, (B, H))
    return {
        "prévision": [(paramètres, températures, état), (paramètres, températures[:1], état)],
        "lisser": [(températures,), (températures[:1],), (températures[:0],)],
    }
