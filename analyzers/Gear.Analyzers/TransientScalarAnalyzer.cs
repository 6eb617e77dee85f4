using System.Collections.Generic;
using System.Collections.Immutable;
using System.Linq;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.Diagnostics;
using Microsoft.CodeAnalysis.Operations;

namespace Gear.Analyzers;

/// <summary>
/// GEAR001: a TorchSharp <c>Scalar</c> made for one call — a number converted where a Scalar is wanted, or a TorchSharp
/// method that makes one inside (<c>tensor + tensor</c> is <c>add(other, 1)</c>; <c>tensor * 0.5</c>, <c>square()</c>, …).
/// Nothing keeps such a Scalar alive during the native call, so a garbage collection started by any thread can free it
/// mid-call (docs/reliability.md). Use a static Scalar (<c>Scalars</c>), a <c>using</c> Scalar, or the overload that
/// takes one (<c>a.add(b, Scalars.One)</c>).
/// </summary>
[DiagnosticAnalyzer(LanguageNames.CSharp)]
public sealed class TransientScalarAnalyzer : DiagnosticAnalyzer
{
    public static readonly DiagnosticDescriptor Rule = new(
        "GEAR001", "Transient TorchSharp Scalar",
        "{0}: nothing keeps that Scalar alive during the native call, so a garbage collection can free it mid-call; pass a static or 'using' Scalar",
        "Reliability", DiagnosticSeverity.Warning, isEnabledByDefault: true);

    /// <summary>TorchSharp 0.107.0 methods whose IL calls Scalar's implicit conversion (read from the assembly), by type, name and parameter types.</summary>
    private static readonly HashSet<string> MakersOfScalars = new()
    {
        "TorchSharp.torch.Tensor.add(Scalar)",
        "TorchSharp.torch.Tensor.add(Tensor)",
        "TorchSharp.torch.Tensor.add_(Scalar)",
        "TorchSharp.torch.Tensor.add_(Tensor)",
        "TorchSharp.torch.Tensor.addcdiv(Tensor,Tensor)",
        "TorchSharp.torch.Tensor.addcdiv_(Tensor,Tensor)",
        "TorchSharp.torch.Tensor.celu()",
        "TorchSharp.torch.Tensor.celu_()",
        "TorchSharp.torch.Tensor.elu(Double)",
        "TorchSharp.torch.Tensor.elu_(Double)",
        "TorchSharp.torch.Tensor.op_Addition(Double,Tensor)",
        "TorchSharp.torch.Tensor.op_Addition(Int32,Tensor)",
        "TorchSharp.torch.Tensor.op_Addition(Int64,Tensor)",
        "TorchSharp.torch.Tensor.op_Addition(Single,Tensor)",
        "TorchSharp.torch.Tensor.op_Addition(Tensor,Double)",
        "TorchSharp.torch.Tensor.op_Addition(Tensor,Int32)",
        "TorchSharp.torch.Tensor.op_Addition(Tensor,Int64)",
        "TorchSharp.torch.Tensor.op_Addition(Tensor,Single)",
        "TorchSharp.torch.Tensor.op_Addition(Tensor,Tensor)",
        "TorchSharp.torch.Tensor.op_Division(Double,Tensor)",
        "TorchSharp.torch.Tensor.op_Division(Int32,Tensor)",
        "TorchSharp.torch.Tensor.op_Division(Int64,Tensor)",
        "TorchSharp.torch.Tensor.op_Division(Single,Tensor)",
        "TorchSharp.torch.Tensor.op_Division(Tensor,Double)",
        "TorchSharp.torch.Tensor.op_Division(Tensor,Int32)",
        "TorchSharp.torch.Tensor.op_Division(Tensor,Int64)",
        "TorchSharp.torch.Tensor.op_Division(Tensor,Single)",
        "TorchSharp.torch.Tensor.op_Modulus(Tensor,Double)",
        "TorchSharp.torch.Tensor.op_Modulus(Tensor,Int32)",
        "TorchSharp.torch.Tensor.op_Modulus(Tensor,Int64)",
        "TorchSharp.torch.Tensor.op_Modulus(Tensor,Single)",
        "TorchSharp.torch.Tensor.op_Multiply(Double,Tensor)",
        "TorchSharp.torch.Tensor.op_Multiply(Int32,Tensor)",
        "TorchSharp.torch.Tensor.op_Multiply(Int64,Tensor)",
        "TorchSharp.torch.Tensor.op_Multiply(Single,Tensor)",
        "TorchSharp.torch.Tensor.op_Multiply(Tensor,Double)",
        "TorchSharp.torch.Tensor.op_Multiply(Tensor,Int32)",
        "TorchSharp.torch.Tensor.op_Multiply(Tensor,Int64)",
        "TorchSharp.torch.Tensor.op_Multiply(Tensor,Single)",
        "TorchSharp.torch.Tensor.op_Subtraction(Double,Tensor)",
        "TorchSharp.torch.Tensor.op_Subtraction(Int32,Tensor)",
        "TorchSharp.torch.Tensor.op_Subtraction(Int64,Tensor)",
        "TorchSharp.torch.Tensor.op_Subtraction(Single,Tensor)",
        "TorchSharp.torch.Tensor.op_Subtraction(Tensor,Double)",
        "TorchSharp.torch.Tensor.op_Subtraction(Tensor,Int32)",
        "TorchSharp.torch.Tensor.op_Subtraction(Tensor,Int64)",
        "TorchSharp.torch.Tensor.op_Subtraction(Tensor,Single)",
        "TorchSharp.torch.Tensor.softplus(Double,Double)",
        "TorchSharp.torch.Tensor.square()",
        "TorchSharp.torch.arange(Scalar,Nullable`1,Device,Boolean)",
        "TorchSharp.torch.arange(Scalar,Scalar,Nullable`1,Device,Boolean)",
        "TorchSharp.torch.nn.functional.celu(Tensor,Double,Boolean)",
        "TorchSharp.torch.nn.functional.hardshrink(Tensor,Double)",
        "TorchSharp.torch.nn.functional.hardtanh(Tensor,Double,Double,Boolean)",
        "TorchSharp.torch.nn.functional.leaky_relu(Tensor,Double,Boolean)",
        "TorchSharp.torch.nn.functional.softshrink(Tensor,Double)",
        "TorchSharp.torch.nn.functional.threshold(Tensor,Double,Double,Boolean)",
        "TorchSharp.torch.normal(Double,Double,ReadOnlySpan`1,Nullable`1,Device,Boolean,Generator,String[])",
    };

    public override ImmutableArray<DiagnosticDescriptor> SupportedDiagnostics => ImmutableArray.Create(Rule);

    public override void Initialize(AnalysisContext context)
    {
        context.ConfigureGeneratedCodeAnalysis(GeneratedCodeAnalysisFlags.None);
        context.EnableConcurrentExecution();
        context.RegisterOperationAction(Conversion, OperationKind.Conversion);
        context.RegisterOperationAction(Call, OperationKind.Invocation, OperationKind.Binary, OperationKind.CompoundAssignment, OperationKind.Unary);
    }

    private static bool IsScalar(ITypeSymbol? type) => type?.ToDisplayString() == "TorchSharp.Scalar";

    private static void Conversion(OperationAnalysisContext context)
    {
        var conversion = (IConversionOperation)context.Operation;
        if (conversion.IsImplicit && IsScalar(conversion.Type) && !IsScalar(conversion.Operand.Type) && !Held(conversion))
            context.ReportDiagnostic(Diagnostic.Create(Rule, conversion.Syntax.GetLocation(), $"'{conversion.Operand.Syntax}' becomes a Scalar"));
    }

    /// <summary>A Scalar made to be held: a field's initial value, or a <c>using</c> local's (disposed at the end of its scope).</summary>
    private static bool Held(IOperation conversion)
    {
        var parent = conversion.Parent;
        if (parent is IFieldInitializerOperation)
            return true;
        while (parent is IVariableInitializerOperation or IVariableDeclaratorOperation or IVariableDeclarationOperation or IVariableDeclarationGroupOperation)
            parent = parent.Parent;
        return parent is IUsingDeclarationOperation or IUsingOperation;
    }

    private static void Call(OperationAnalysisContext context)
    {
        IMethodSymbol? method = context.Operation switch
        {
            IInvocationOperation i => i.TargetMethod,
            IBinaryOperation b => b.OperatorMethod,
            ICompoundAssignmentOperation c => c.OperatorMethod,
            IUnaryOperation u => u.OperatorMethod,
            _ => null,
        };
        if (method is null)
            return;
        string key = $"{method.ContainingType.ToDisplayString()}.{method.Name}({string.Join(",", method.Parameters.Select(p => p.Type is IArrayTypeSymbol a ? a.ElementType.MetadataName + "[]" : p.Type.MetadataName))})";
        if (MakersOfScalars.Contains(key))
            context.ReportDiagnostic(Diagnostic.Create(Rule, context.Operation.Syntax.GetLocation(), $"'{context.Operation.Syntax}' makes a Scalar inside TorchSharp"));
    }
}
