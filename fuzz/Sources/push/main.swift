import FuzzSupport

FuzzSupport.main(FuzzSupport.runPush)
