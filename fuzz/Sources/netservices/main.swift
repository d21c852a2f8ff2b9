import FuzzSupport

FuzzSupport.main(FuzzSupport.runNetworkServices)
