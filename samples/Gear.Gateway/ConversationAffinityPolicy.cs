using Yarp.ReverseProxy.LoadBalancing;
using Yarp.ReverseProxy.Model;

namespace Gear.Gateway;

/// <summary>
/// YARP load-balancing policy "ConversationAffinity": a request of a conversation this gateway has seen goes to the
/// replica that served its last turn while that replica is available (its history is resident there); any other
/// request goes to the least-loaded available replica (<see cref="ReplicaBook.LeastLoaded"/>).
/// </summary>
public sealed class ConversationAffinityPolicy(ReplicaBook book) : ILoadBalancingPolicy
{
    /// <summary>The policy's name in the cluster configuration.</summary>
    public const string PolicyName = "ConversationAffinity";

    public string Name => PolicyName;

    public DestinationState? PickDestination(HttpContext context, ClusterState cluster, IReadOnlyList<DestinationState> availableDestinations)
    {
        if (ConversationRouting.KeyOf(context) is { } key && book.HolderOf(key) is { } holder
            && availableDestinations.FirstOrDefault(d => d.DestinationId == holder) is { } home)
            return home;
        return book.LeastLoaded(availableDestinations);
    }
}
