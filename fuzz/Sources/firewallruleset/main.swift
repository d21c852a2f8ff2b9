import FuzzSupport

FuzzSupport.main(FuzzSupport.runFirewallRuleset)
