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


def prévision(paramètres, températures, état):
    """températures : [T, B, D] ; état : [B, H] → (état final, états [T, B, H])."""
    # Σ des états au fil du temps ↓
    historique = []
    # boucle sur le temps ⏱
    for τ in range(températures.shape[0]):  # τ = pas de temps
        # ① entrée du pas τ
        entrée = températures[τ] @ paramètres[CLÉ_ENTRÉE]
        # ② récurrence
        état = activation(entrée + état @ paramètres[CLÉ_ÉTAT])  # « cellule »
        historique.append(état)
        # ③ fin du pas — rien d'autre ici
    # après la boucle : on empile ✓
    return état, jnp.stack(historique)


class Thermomètre:
    """Lissage exponentiel ; le nom de la classe est accentué lui aussi."""

    def __init__(self, β):
        self.β = β

    def lisser(self, mesures):
        niveau = jnp.zeros(mesures.shape[1:])
        for mesure in mesures:  # 🌡 une mesure par pas
            niveau = self.β * niveau + (1 - self.β) * mesure  # moyenne mobile
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
