namespace OnnxKfac.Toolkit.Optim;

/// <summary>Gradient clipping by global norm (torch.nn.utils.clip_grad_norm_).</summary>
public static class GradientClipping
{
    /// <summary>The L2 norm of all trainable parameters' gradients taken together.</summary>
    public static double GlobalNorm(IReadOnlyList<Parameter> parameters)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        double sum = 0;
        for (int i = 0; i < parameters.Count; i++)
            if (parameters[i].Trainable) sum += Kernels.SumOfSquares(parameters[i].Grad);
        return Math.Sqrt(sum);
    }

    /// <summary>
    /// Computes the global L2 norm of the trainable parameters' gradients and, when
    /// <c>c = maxNorm / (norm + 1e-6)</c> is below 1, multiplies every such gradient by c in
    /// place, as torch.nn.utils.clip_grad_norm_ does. Returns the norm before clipping. A
    /// non-finite norm leaves the gradients untouched (the caller should skip the update).
    /// Parameters a group freezes but that are still <see cref="Parameter.Trainable"/> count toward
    /// the norm; mark parameters that should not count as not trainable. Allocates nothing.
    /// </summary>
    public static double ClipByGlobalNorm(IReadOnlyList<Parameter> parameters, double maxNorm)
    {
        if (!(double.IsFinite(maxNorm) && maxNorm > 0))
            throw Checks.Error(nameof(maxNorm), maxNorm, "must be a positive number");
        double norm = GlobalNorm(parameters);
        double coef = maxNorm / (norm + 1e-6);
        if (coef < 1)
        {
            float c = (float)coef;
            for (int i = 0; i < parameters.Count; i++)
                if (parameters[i].Trainable) Kernels.Scale(parameters[i].Grad, c);
        }
        return norm;
    }
}
